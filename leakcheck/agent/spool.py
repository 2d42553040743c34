"""The on-disk spool: every report lands here before any upload, and leaves
only once the collector has acknowledged it. Format in the package docstring."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakcheck.agent.files import fsync_dir, locked, read_json, write_atomic, write_json
from leakcheck.agent.state import AgentState, Paths

log = logging.getLogger(__name__)
ENTRY = re.compile(r"^(\d{20})-([0-9a-f-]{36})\.json$")
QUARANTINE = "quarantine"
ATTEMPTS = "attempts.json"  # failed deliveries per report_id (5xx answers)


@dataclass(frozen=True)
class Entry:
    path: Path
    spooled_ns: int
    report_id: str
    size: int

    def load(self) -> dict[str, Any]:
        return json.loads(self.path.read_bytes())


class Spool:
    def __init__(self, paths: Paths, max_bytes: int = 64 << 20, max_age_s: float = 30 * 86400,
                 directory: Path | None = None, id_key: str = "report_id", state_file: Path | None = None):
        self.paths = paths
        # The flows spool (leakcheck.flows documents) is a second Spool in its
        # own directory, keyed on batch_id; the same rules apply to both.
        self.dir = directory or paths.spool
        self.id_key = id_key
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.state = AgentState(paths, state_file)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def entries(self) -> list[Entry]:
        """Complete reports, oldest first (temporary files are not entries)."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            match = ENTRY.match(name)
            if not match:
                continue
            path = self.dir / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # uploaded meanwhile by another process
                continue
            out.append(Entry(path, int(match.group(1)), match.group(2), size))
        return out

    def depth(self) -> int:
        return len(self.entries())

    def add(self, report: dict[str, Any]) -> Entry:
        """Spool one report durably, then enforce the bounds (dropping oldest)."""
        data = json.dumps(report, separators=(",", ":")).encode("utf-8")
        with locked(self.paths.lock):
            spooled = max(time.time_ns(), self._newest_ns() + 1)
            path = self.dir / f"{spooled:020d}-{report[self.id_key]}.json"
            write_atomic(path, data)
            entry = Entry(path, spooled, report[self.id_key], len(data))
            dropped = self._enforce_bounds(keep=entry)
        if dropped:
            log.warning("spool full: dropped %d oldest report(s)", dropped)
            self.state.update(add_dropped=dropped)
        return entry

    def remove(self, entry: Entry) -> None:
        """The collector acknowledged it: forget it, durably."""
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            return
        fsync_dir(self.dir)
        self._forget_attempts(entry.report_id)

    def reject(self, entry: Entry) -> None:
        """The collector refuses it for good: keep it aside, out of the queue."""
        self._set_aside(entry, "rejected")

    def quarantine(self, entry: Entry) -> None:
        """The collector kept failing on it: keep it aside (never deleted, shown
        by `leakcheck status` and counted in every report's agent block) so
        the reports behind it are delivered."""
        self._set_aside(entry, QUARANTINE)

    def quarantined(self) -> int:
        try:
            return sum(1 for name in os.listdir(self.dir / QUARANTINE) if ENTRY.match(name))
        except FileNotFoundError:
            return 0

    def quarantined_ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.dir / QUARANTINE))
        except FileNotFoundError:
            return []
        return [m.group(2) for m in map(ENTRY.match, names) if m]

    def failed(self, entry: Entry) -> int:
        """Count one more failed delivery of `entry`; returns its count."""
        with locked(self.paths.lock):
            attempts = read_json(self.dir / ATTEMPTS, {})
            attempts = {k: v for k, v in attempts.items() if isinstance(v, int)} if isinstance(attempts, dict) else {}
            attempts[entry.report_id] = attempts.get(entry.report_id, 0) + 1
            write_json(self.dir / ATTEMPTS, attempts)
            return attempts[entry.report_id]

    def _forget_attempts(self, report_id: str) -> None:
        path = self.dir / ATTEMPTS
        if not path.exists():
            return
        with locked(self.paths.lock):
            attempts = read_json(path, {})
            if isinstance(attempts, dict) and report_id in attempts:
                del attempts[report_id]
                write_json(path, attempts)

    def _set_aside(self, entry: Entry, where: str) -> None:
        target = self.dir / where
        target.mkdir(exist_ok=True)
        try:
            os.replace(entry.path, target / entry.path.name)
        except FileNotFoundError:
            return
        fsync_dir(self.dir)
        self._forget_attempts(entry.report_id)

    def clean(self) -> int:
        """Remove temporaries a crash left behind; quarantine unreadable entries."""
        removed = 0
        with locked(self.paths.lock):
            for name in os.listdir(self.dir):
                if name.startswith(".tmp-"):
                    (self.dir / name).unlink(missing_ok=True)
                    removed += 1
            for entry in self.entries():
                try:
                    entry.load()
                except (OSError, ValueError):
                    self.reject(entry)
                    removed += 1
        return removed

    def _newest_ns(self) -> int:
        entries = self.entries()
        return entries[-1].spooled_ns if entries else 0

    def _enforce_bounds(self, keep: Entry) -> int:
        entries = self.entries()
        total = sum(e.size for e in entries)
        oldest_allowed = time.time_ns() - int(self.max_age_s * 1e9)
        dropped = 0
        for entry in entries:
            if entry.path == keep.path:
                break  # never drop the report just written
            if total <= self.max_bytes and entry.spooled_ns >= oldest_allowed:
                break
            entry.path.unlink(missing_ok=True)
            total -= entry.size
            dropped += 1
        if dropped:
            fsync_dir(self.dir)
        return dropped
