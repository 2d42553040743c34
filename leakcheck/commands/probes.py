"""`leakcheck probes`: list the probes, their leak class and finding ids."""

from __future__ import annotations

import argparse
import textwrap


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("probes", help="list the available probes")
    parser.add_argument("--long", action="store_true", help="show each probe's manual")
    parser.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from leakcheck.registry import discover

    probes = discover()
    width = max([10, *map(len, probes)])  # the names' column fits the longest (posture-updates)
    indent = " " * (width + 1)
    for name, cls in probes.items():
        flags = [f for f, on in (("needs root", cls.needs_root), ("disruptive", cls.disruptive)) if on]
        print(f"{name:<{width}} {cls.leak_class}" + (f" [{', '.join(flags)}]" if flags else ""))
        print(textwrap.fill("finding ids: " + ", ".join(cls.finding_ids), 80,
                            initial_indent=indent, subsequent_indent=indent + "  "))
        if args.long:
            print(textwrap.indent(cls.manual(), indent) + "\n")
    return 0
