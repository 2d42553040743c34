"""The command line: parse, call the engine, render, map to an exit status.

Commands are registered from modules listed in COMMANDS; each module has
`register(subparsers)` which sets `func(args) -> int` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from leakcheck import __version__
from leakcheck.errors import ExitCode, LeakcheckError

COMMANDS = (
    "leakcheck.commands.run",
    "leakcheck.commands.probes",
    "leakcheck.commands.collector",
    "leakcheck.commands.enroll",
    "leakcheck.commands.status",
    "leakcheck.commands.agent",
    "leakcheck.commands.fleet",
    "leakcheck.commands.config",
    "leakcheck.commands.watch",
)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors, which is our USAGE code too."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with only `command` when that names
    one: `leakcheck run` then imports no other command's module."""
    parser = _Parser(prog="leakcheck", description="Find traffic that escapes the VPN tunnel.")
    parser.add_argument("--version", action="version", version=f"leakcheck {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = f"leakcheck.commands.{command}"
    for module_name in (wanted,) if wanted in COMMANDS else COMMANDS:
        importlib.import_module(module_name).register(sub)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is not an option (the
    top-level options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="leakcheck: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.verbose < 3:  # pyroute2 and scapy debug output drowns ours; -vvv shows it
        for noisy in ("pyroute2", "scapy", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return int(args.func(args))
    except LeakcheckError as exc:
        print(f"leakcheck: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130
