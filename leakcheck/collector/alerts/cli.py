"""Command-line side of alerts: `collector serve` options, the settings
file's `[alerts]` table, and `leakcheck collector alerts log|events`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from leakcheck.errors import ConfigError, UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Top-level tables of the collector's settings file (`collector serve --config`).
_FILE_TABLES = {"alerts"}


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("alerts and SIEM feeds (also the settings file's [alerts] table)")
    group.add_argument("--config", metavar="FILE", help="the collector's settings file (TOML; [alerts] table)")
    group.add_argument("--webhook", metavar="URL", action="append", default=[],
                       help="POST signed event batches here (repeatable; pair each with --webhook-secret-file)")
    group.add_argument("--webhook-secret-file", metavar="FILE", action="append", default=[],
                       help="the HMAC secret of the --webhook at the same position (at least 16 characters)")
    group.add_argument("--alert-batch-interval", type=float, metavar="S", help="seconds of events per batch (2)")
    group.add_argument("--stale-intervals", type=float, metavar="N",
                       help="device-stale after N agent intervals without a report (2)")
    group.add_argument("--reconnect-bound", type=float, metavar="S",
                       help="reconnect-slower-than-bound above S seconds (30)")
    group.add_argument("--siem-jsonl", metavar="FILE", help="append every event to FILE as a JSON line")
    group.add_argument("--siem-syslog", metavar="ADDRESS", action="append", default=[],
                       help="udp://HOST:PORT or tcp://HOST:PORT (repeatable)")
    group.add_argument("--siem-format", choices=("rfc5424", "cef"), default=None,
                       help="syslog payload for --siem-syslog: JSON in RFC 5424 (default) or CEF")


def alerts_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `[alerts]` table: the settings file's, then the options on top."""
    table: dict[str, Any] = {}
    if args.config:
        table = _anchored(dict(read_file(args.config).get("alerts", {})), Path(args.config).absolute().parent)
    if len(args.webhook) != len(args.webhook_secret_file):
        raise UsageError("give one --webhook-secret-file per --webhook")
    hooks = _as_list(table.get("webhook", []))
    hooks += [{"url": url, "secret_file": str(Path(secret).absolute())}
              for url, secret in zip(args.webhook, args.webhook_secret_file)]
    syslogs = _as_list(table.get("syslog", []))
    syslogs += [{"address": a, **({"format": args.siem_format} if args.siem_format else {})}
                for a in args.siem_syslog]
    for key, value in (("webhook", hooks), ("syslog", syslogs)):
        if value:
            table[key] = value
    for key, value in (("batch_interval", args.alert_batch_interval), ("stale_intervals", args.stale_intervals),
                       ("reconnect_bound", args.reconnect_bound)):
        if value is not None:
            table[key] = value
    if args.siem_jsonl:
        table["jsonl"] = {"path": str(Path(args.siem_jsonl).absolute())}
    return table


def read_file(path: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    for key in data:
        if key not in _FILE_TABLES:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(_FILE_TABLES))})", key=key, path=path)
    return data


def _anchored(table: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file names in the settings file are relative to the file (the
    workers do not share the command's working directory)."""
    def fix(entry: Any, key: str) -> Any:
        if isinstance(entry, dict) and isinstance(entry.get(key), str) and entry[key]:
            return dict(entry, **{key: str(base / entry[key])})
        return entry
    if isinstance(table.get("webhook"), (list, dict)):
        table["webhook"] = [fix(w, "secret_file") for w in _as_list(table["webhook"])]
    if "jsonl" in table:
        table["jsonl"] = fix(table["jsonl"], "path")
    return table


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, dict) else list(value)


def register(actions: argparse._SubParsersAction, db_arg: Any) -> None:
    """`leakcheck collector alerts log|events`, read straight from the database."""
    alerts = actions.add_parser("alerts", help="alert events and the webhook/SIEM delivery log")
    db_arg(alerts, outer=True)
    verbs = alerts.add_subparsers(dest="verb", metavar="VERB", required=True)
    log = verbs.add_parser("log", help="delivery attempts, newest first, and each sink's backlog")
    db_arg(log)
    log.add_argument("--sink", help="only this sink (webhook:NAME, jsonl, syslog:NAME)")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--json", action="store_true")
    events = verbs.add_parser("events", help="state-change events, oldest first")
    db_arg(events)
    events.add_argument("--after", type=int, default=0, help="only events after this seq")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--json", action="store_true", help="JSON lines, one event each")


def run(args: argparse.Namespace, engine: Any) -> int:
    from leakcheck.collector.alerts.store import AlertStore

    store = AlertStore(engine)
    out = sys.stdout
    if args.verb == "log":
        rows = store.deliveries(None, args.limit, args.sink)
        if args.json:
            out.write(json.dumps({"deliveries": rows, "backlog": store.backlog()}, indent=2) + "\n")
            return 0
        for r in rows:
            outcome = "ok" if r["ok"] else f"FAILED {r['error'] or ''}".strip()
            out.write(f"{r['attempted_at']}  {r['sink']:<24} {r['events']:>5} event(s) seq {r['first_seq']}-"
                      f"{r['last_seq']}  attempt {r['attempt']}  {r['status'] or '-'}  {r['duration_ms']} ms  "
                      f"{outcome}\n")
        for sink, n in sorted(store.backlog().items()):
            out.write(f"backlog {sink}: {n} event(s) not yet delivered\n")
        return 0
    for event in store.events(args.after, args.limit):
        if args.json:
            out.write(json.dumps(event) + "\n")
        else:
            out.write(f"{event['seq']:>8}  {event['time']}  {event['type']:<28} {event['device']['id']:<24} "
                      f"{event['summary']}\n")
    return 0
