"""One exception root; the CLI maps each kind to an exit status."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit status of `leakcheck run` (DESIGN.md, report contract)."""

    PASS = 0  # pass or warn
    LEAK = 1
    USAGE = 2  # usage or configuration error
    PROBE_ERROR = 3  # a probe could not complete


class LeakcheckError(Exception):
    """Root of every error leakcheck raises on purpose."""

    exit_code: ExitCode = ExitCode.USAGE


class ConfigError(LeakcheckError):
    """The configuration file is unreadable, malformed or has a bad key/value."""

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None):
        where = f"{path}: " if path else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")
        self.key = key
        self.path = path


class UsageError(LeakcheckError):
    """The command line asks for something that does not exist."""


class ProbeSkipped(Exception):
    """Raised by a probe that cannot run here; the reason is shown to the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NetStateError(LeakcheckError):
    """The network state could not be read."""

    exit_code = ExitCode.PROBE_ERROR
