"""`leakcheck config check|default`: for administrators preparing a rollout.

`check [FILE]` validates a configuration file exactly as the agent will read
it and prints the configuration in force (every key, changes marked);
`default` prints the documented default file generated from the schema,
which is what the packages install as /etc/leakcheck/leakcheck.toml.
"""

from __future__ import annotations

import argparse
import json
import sys

from leakcheck import config as config_mod


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="check a configuration file or print the documented default")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser(
        "check", help="validate a configuration file and print the effective configuration",
        description="Validate FILE (default %s) as the agent would read it and print the "
                    "configuration in force. Exit status 0 valid, 2 invalid (the error names "
                    "the key)." % config_mod.DEFAULT_PATH)
    check.add_argument("file", nargs="?", metavar="FILE", help=f"default {config_mod.DEFAULT_PATH}")
    check.add_argument("--json", action="store_true", help="print the effective configuration as JSON")
    check.set_defaults(func=check_file)

    default = actions.add_parser("default", help="print the documented default configuration file")
    default.set_defaults(func=print_default)


def check_file(args: argparse.Namespace) -> int:
    # load() raises ConfigError naming the key; the CLI turns it into exit 2.
    config = config_mod.load(args.file)
    if config.source is None:
        print(f"leakcheck: no file at {config_mod.DEFAULT_PATH}: every key has its default",
              file=sys.stderr)
    else:
        print(f"leakcheck: {config.source}: valid", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(config.as_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(config_mod.render_effective(config))
    return 0


def print_default(args: argparse.Namespace) -> int:
    sys.stdout.write(config_mod.render_default())
    return 0
