"""`leakcheck agent`: the background service (systemd runs it)."""

from __future__ import annotations

import argparse

from leakcheck import config as config_mod


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("agent", help="run as the background service: scheduled and "
                                          "network-change checks, spooled uploads")
    parser.add_argument("--config", metavar="FILE", help=f"configuration file (default {config_mod.DEFAULT_PATH})")
    parser.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from leakcheck.agent import logfmt
    from leakcheck.agent.service import Agent

    config = config_mod.load(args.config)
    logfmt.configure(args.verbose)
    return Agent(config, verbose=args.verbose).serve()
