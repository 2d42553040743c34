"""One way to run the OS tools a backend reads (netstat, scutil, PowerShell):
a `Runner`. The live one runs the command; a recorded one answers from
captured output, so every parser and whole recorded states are tested on
Linux exactly as the backend would read them on the real machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping, Protocol, Sequence

TIMEOUT_S = 15.0


class CommandFailed(RuntimeError):
    """The command ran and failed (or could not start); `output` holds what it said."""

    def __init__(self, argv: Sequence[str], message: str, output: str = ""):
        super().__init__(f"{' '.join(argv)}: {message}")
        self.argv = tuple(argv)
        self.output = output


class NotRecorded(CommandFailed):
    """A recording holds no output for this command."""


class Runner(Protocol):
    def run(self, argv: Sequence[str]) -> str: ...


class SubprocessRunner:
    """Runs the command with a time limit; stdout on success, CommandFailed otherwise."""

    def __init__(self, timeout_s: float = TIMEOUT_S):
        self.timeout_s = timeout_s

    def run(self, argv: Sequence[str]) -> str:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout_s,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandFailed(argv, f"{type(exc).__name__}: {exc}") from exc
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()
            raise CommandFailed(argv, f"exit {done.returncode}: {said[:200]}", done.stdout + done.stderr)
        return done.stdout


class RecordedRunner:
    """Answers from recorded output: `{argv tuple: text}` or `{argv tuple: Path}`.
    A recorded failure is a `CommandFailed` instance as the value."""

    def __init__(self, recordings: Mapping[tuple[str, ...], "str | Path | CommandFailed"]):
        self.recordings = dict(recordings)
        self.asked: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str]) -> str:
        key = tuple(argv)
        self.asked.append(key)
        if key not in self.recordings:
            raise NotRecorded(argv, "not in the recording")
        value = self.recordings[key]
        if isinstance(value, CommandFailed):
            raise value
        return value.read_text() if isinstance(value, Path) else value


class CommandBackend:
    """What the macOS and Windows backends share: the OS tools run through one
    `Runner` (live, or a recording in tests), the process/socket reader
    optional, and `root` fixed by a recording or asked of this machine."""

    name = "commands"

    def __init__(self, runner: Runner | None = None, read_activity: bool = True, root: bool | None = None):
        self.runner = runner or SubprocessRunner()
        self.read_activity = read_activity
        self.root = root  # a recording says whether it was taken as root; None: ask this machine

    def _read_state(self, read):  # read(runner, activity_reader) -> NetState
        from leakcheck.platform.activity import read_activity
        return read(self.runner, read_activity if self.read_activity else None)
