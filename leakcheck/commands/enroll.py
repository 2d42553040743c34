"""`leakcheck enroll`: exchange the fleet secret for this device's token."""

from __future__ import annotations

import argparse
from pathlib import Path

from leakcheck import config as config_mod
from leakcheck.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("enroll", help="enroll this device with a collector")
    parser.add_argument("--collector", metavar="URL", help="collector URL (default: collector.url)")
    parser.add_argument("--secret-file", metavar="FILE", required=True, help="fleet enrollment secret")
    parser.add_argument("--config", metavar="FILE", help=f"configuration file (default {config_mod.DEFAULT_PATH})")
    parser.add_argument("--token-file", metavar="FILE", help="where to store the token (default: collector.token_file)")
    parser.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from leakcheck.agent.delivery import paths
    from leakcheck.agent.enroll import enroll

    config = config_mod.load(args.config)
    url = args.collector or config.get("collector", "url")
    if not url:
        raise UsageError("give --collector URL or set collector.url")
    try:
        secret = Path(args.secret_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read {args.secret_file}: {exc}") from None
    token_file = Path(args.token_file or config.get("collector", "token_file"))
    device_id = enroll(url, secret, token_file, paths(config), config.get("collector", "ca_file"))
    print(f"enrolled device {device_id}; token stored in {token_file}")
    return 0
