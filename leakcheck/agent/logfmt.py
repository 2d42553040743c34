"""Logging for the long-running agent: one line per record on stderr, with a
syslog priority prefix (<3> error ... <7> debug) that journald understands."""

from __future__ import annotations

import logging
import os
import sys

PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    def __init__(self, prefixed: bool):
        super().__init__("%(name)s: %(message)s")
        self.prefixed = prefixed

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")  # one record, one journal entry
        if self.prefixed:
            return f"<{PRIORITY.get(record.levelno, 6)}>{text}"
        return f"{record.levelname.lower()} {text}"


def configure(verbose: int) -> None:
    # systemd sets JOURNAL_STREAM when stderr goes to the journal.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(prefixed=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
