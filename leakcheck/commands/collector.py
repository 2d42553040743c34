"""`leakcheck collector serve|token|migrate|alerts`: run and administer the collector."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    serve.add_argument("--daily-bytes", type=int, default=16 << 20,
                       help="per-device storage budget: report bytes stored per UTC day")
    serve.add_argument("--oidc-issuer", metavar="URL", default="",
                       help="OIDC sign-in for the web page: the issuer (its discovery document is read)")
    serve.add_argument("--oidc-client-id", default="")
    serve.add_argument("--oidc-client-secret-file", metavar="FILE", default="",
                       help="confidential clients only (PKCE is used either way)")
    serve.add_argument("--oidc-redirect-uri", metavar="URL", default="",
                       help="as registered at the issuer (default: this collector's /oidc/callback)")
    serve.add_argument("--oidc-role-claim", default="roles", help="ID token claim holding the role")
    serve.add_argument("--oidc-admin-value", default="leakcheck-admin")
    serve.add_argument("--oidc-analyst-value", default="leakcheck-analyst")
    serve.add_argument("--advisories-file", metavar="FILE", default="",
                       help="VPN client advisory table (leakcheck.advisories/1 JSON) served to agents")
    from leakcheck.collector.alerts import cli as alerts_cli
    alerts_cli.add_serve_options(serve)
    serve.add_argument("--retention-days", type=int, default=0,
                       help="delete reports older than this many days, in the background (0: keep all)")
    serve.set_defaults(func=_serve)

    token = actions.add_parser("token", help="list, create or revoke tokens")
    # --db (and its password file) may come before the verb as well as after it.
    _db_arg(token, outer=True)
    verbs = token.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="tokens by id, kind, label and device (never their values)")
    _db_arg(listing)
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    create = verbs.add_parser("create", help="make an analyst or admin token (printed once)")
    _db_arg(create)
    create.add_argument("--label", default="", help="a note naming the analyst (revoke by it later)")
    create.add_argument("--role", choices=("analyst", "admin"), default="analyst",
                        help="analyst: read-only; admin: also tokens, approvals, audit log")
    revoke = verbs.add_parser("revoke", help="revoke a token by value, --id or --label")
    _db_arg(revoke)
    revoke.add_argument("value", nargs="?", help="the token itself")
    revoke.add_argument("--id", type=int, help="the token's id (see token list)")
    revoke.add_argument("--label", help="every live token with this label")
    revoke_device = verbs.add_parser("revoke-device",
                                     help="revoke a device's tokens (also approves its re-enrollment)")
    _db_arg(revoke_device)
    revoke_device.add_argument("value", metavar="DEVICE", help="the device id")
    token.set_defaults(func=_token)

    audit = actions.add_parser("audit", help="the audit log of admin actions, newest first")
    _db_arg(audit)
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true", help="print as JSON")
    audit.set_defaults(func=_audit)

    migrate = actions.add_parser("migrate", help="bring the database schema up to date")
    _db_arg(migrate)
    migrate.set_defaults(func=_migrate)

    alerts_cli.register(actions, _db_arg)
    actions.choices["alerts"].set_defaults(func=_alerts)


def _db_arg(parser: argparse.ArgumentParser, outer: bool = False) -> None:
    # argparse lets a subcommand's defaults overwrite what its parent parsed,
    # so the parent's copy has its own dest and _settings merges the two.
    prefix = "outer_" if outer else ""
    parser.add_argument("--db", dest=prefix + "db", default=None,
                        help=f"SQLite file (default {DEFAULT_DB}) or postgresql://user@host/db")
    parser.add_argument("--db-password-file", dest=prefix + "db_password_file", metavar="FILE", default=None,
                        help="PostgreSQL password, kept out of --db (and so out of the process list)")


def _settings(args: argparse.Namespace, **extra):  # type: ignore[no-untyped-def]
    from leakcheck.collector.settings import Settings
    password = args.db_password_file or getattr(args, "outer_db_password_file", None)
    extra.setdefault("db_password_file", str(Path(password).absolute()) if password else "")
    return Settings(db=args.db or getattr(args, "outer_db", None) or DEFAULT_DB, **extra)


def _serve(args: argparse.Namespace) -> int:
    from leakcheck.collector.alerts.cli import alerts_settings
    from leakcheck.collector.server import serve
    from leakcheck.collector.settings import read_secret

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    settings = _settings(args, enroll_secret=read_secret(args.enroll_secret_file),
                         enroll_secret_file=str(Path(args.enroll_secret_file).absolute())
                         if args.enroll_secret_file else "",
                         max_body_bytes=args.max_body, rate_limit=args.rate_limit,
                         rate_window_s=args.rate_window, device_interval_s=args.device_interval,
                         device_daily_bytes=args.daily_bytes, retention_days=args.retention_days,
                         secure_cookies=bool(args.tls_cert),
                         oidc_issuer=args.oidc_issuer, oidc_client_id=args.oidc_client_id,
                         oidc_client_secret_file=str(Path(args.oidc_client_secret_file).absolute())
                         if args.oidc_client_secret_file else "",
                         oidc_redirect_uri=args.oidc_redirect_uri, oidc_role_claim=args.oidc_role_claim,
                         oidc_admin_value=args.oidc_admin_value, oidc_analyst_value=args.oidc_analyst_value,
                         advisories_file=str(Path(args.advisories_file).absolute()) if args.advisories_file else "",
                         alerts=alerts_settings(args))
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
    if args.verb == "list":
        rows = store.list_tokens(include_revoked=args.all)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['id']:>5}  {r['kind']:<8} {r['label'] or '-':<30} {r['device_id'] or '-':<24} "
                      f"created {r['created_at']}" + (f", revoked {r['revoked_at']}" if r["revoked_at"] else ""))
        return 0
    if args.verb == "create":
        # Analyst or admin tokens; device tokens come from enrollment.
        print(store.create_token(args.role, None, args.label))
        _record(store, "token.create", {"role": args.role, "label": args.label})
        return 0
    if args.verb == "revoke-device":
        count = store.revoke_device(args.value)
        _record(store, "enrollment.approve", {"device_id": args.value, "revoked": count})
        print(f"revoked {count} token(s) of device {args.value}; it may enroll anew", file=sys.stderr)
        return 0
    chosen = [x for x in (args.value, args.id, args.label) if x is not None]
    if len(chosen) != 1:
        raise UsageError("token revoke takes exactly one of: TOKEN, --id ID, --label LABEL")
    if args.value is not None:
        count = int(store.revoke_token(args.value))
    else:
        count = store.revoke_tokens(token_id=args.id, label=args.label)
    if count:
        _record(store, "token.revoke", {"id": args.id, "label": args.label, "count": count}
                if args.value is None else {"by": "value", "count": count})
    print(f"revoked {count} token(s)" if count else "no such active token", file=sys.stderr)
    return 0 if count else 1


def _record(store: object, action: str, detail: dict) -> None:
    """The command line is an admin too: audited as cli:<user>."""
    import getpass

    from leakcheck.collector import audit
    audit.record(store, f"cli:{getpass.getuser()}", action, detail)  # type: ignore[arg-type]


def _audit(args: argparse.Namespace) -> int:
    from leakcheck.collector import audit

    rows = audit.page(_store(args), max(1, min(args.limit, 10_000))).rows
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['at']}  {r['actor']:<30} {r['action']:<20} {json.dumps(r['detail'], sort_keys=True)}")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    from leakcheck.collector.alerts.cli import run
    return run(args, _store(args).engine)


def _migrate(args: argparse.Namespace) -> int:
    _store(args)
    return 0
