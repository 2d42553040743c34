"""`leakcheck collector serve|token|migrate`: run and administer the collector."""

from __future__ import annotations

import argparse
import sys

from leakcheck.errors import UsageError

DEFAULT_DB = "/var/lib/leakcheck/collector.sqlite3"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("collector", help="run or administer the fleet collector")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    serve = actions.add_parser("serve", help="serve the HTTP API and the fleet web page")
    _db_arg(serve)
    serve.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--enroll-secret-file", metavar="FILE", help="fleet enrollment secret (omit: closed)")
    serve.add_argument("--tls-cert", metavar="FILE")
    serve.add_argument("--tls-key", metavar="FILE")
    serve.add_argument("--max-body", type=int, default=256 * 1024, help="request body cap in bytes")
    serve.add_argument("--rate-limit", type=int, default=60, help="reports per device per window")
    serve.add_argument("--rate-window", type=int, default=60, help="rate-limit window in seconds")
    serve.add_argument("--device-interval", type=int, default=900,
                       help="agents' interval in seconds; stale after twice this")
    serve.set_defaults(func=_serve)

    token = actions.add_parser("token", help="create or revoke tokens")
    _db_arg(token)
    token.add_argument("verb", choices=("create", "revoke", "revoke-device"))
    token.add_argument("value", nargs="?", help="revoke: the token; revoke-device: the device id")
    token.add_argument("--label", default="", help="create: a note naming the analyst")
    token.set_defaults(func=_token)

    migrate = actions.add_parser("migrate", help="bring the database schema up to date")
    _db_arg(migrate)
    migrate.set_defaults(func=_migrate)


def _db_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=DEFAULT_DB,
                        help=f"SQLite file (default {DEFAULT_DB}) or postgresql://user:pw@host/db")


def _settings(args: argparse.Namespace, **extra):  # type: ignore[no-untyped-def]
    from leakcheck.collector.settings import Settings
    return Settings(db=args.db, **extra)


def _serve(args: argparse.Namespace) -> int:
    from leakcheck.collector.server import serve
    from leakcheck.collector.settings import read_secret

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    settings = _settings(args, enroll_secret=read_secret(args.enroll_secret_file),
                         max_body_bytes=args.max_body, rate_limit=args.rate_limit,
                         rate_window_s=args.rate_window, device_interval_s=args.device_interval,
                         secure_cookies=bool(args.tls_cert))
    serve(settings, args.listen, args.port, args.workers, args.tls_cert, args.tls_key)
    return 0


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import migrate
    from leakcheck.collector.store import Store

    engine = make_engine(_settings(args).url)
    migrate(engine)
    return Store(engine)


def _token(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.verb == "create":
        # Only analyst tokens are made here; device tokens come from enrollment.
        print(store.create_token("analyst", None, args.label))
        return 0
    if not args.value:
        raise UsageError(f"token {args.verb} needs a value")
    if args.verb == "revoke":
        done = store.revoke_token(args.value)
        print("revoked" if done else "no such active token", file=sys.stderr)
        return 0 if done else 1
    count = store.revoke_device(args.value)
    print(f"revoked {count} token(s) of device {args.value}", file=sys.stderr)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    _store(args)
    return 0
