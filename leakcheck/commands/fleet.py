"""`leakcheck fleet summary|devices|findings|finding-devices|audit|flows|export|conformance`:
fleet reports for security teams, pulled from the collector with a read-only
analyst token (audit: an admin token). Lists page by the collector's cursor
(`--limit`, `--cursor`, or `--all` streamed). `flows` lists the flows the
agents' live watch saw leave outside the tunnel (every page of the API's
cursor), or with `--by app|device` the leaked flows per application or per
device."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from leakcheck.errors import LeakcheckError, UsageError


class FleetError(LeakcheckError):
    """The collector refused the query or could not be reached."""


# Views that are lists: paged by the collector (Link: rel="next").
LISTS = ("devices", "findings", "finding-devices", "audit")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("fleet", help="fleet reports from the collector (analyst token)")
    views = parser.add_subparsers(dest="view", metavar="VIEW", required=True)
    for name, text in (("summary", "devices per verdict, finding, OS; trend; slowest reconnects"),
                       ("devices", "devices and their latest state (filters: --os, --verdict, ...)"),
                       ("findings", "findings by probe, finding id, device, OS, tunnel kind and time range"),
                       ("finding-devices", "the devices whose latest report has FINDING_ID"),
                       ("audit", "the audit log of admin actions (admin token)"),
                       ("flows", "flows leaked outside the tunnel (live watch), per device or application"),
                       ("export", "every report in a time range (CSV, JSON lines, or OCSF findings)"),
                       ("conformance", "devices meeting each NCSC recommendation, and the daily trend")):
        view = views.add_parser(name, help=text)
        view.add_argument("--collector", metavar="URL", required=True)
        view.add_argument("--token-file", metavar="FILE", required=True, help="analyst (or admin) token")
        view.add_argument("--ca-file", metavar="FILE", default="", help="CA bundle (default: system store)")
        view.add_argument("--format", choices=("table", "json", "csv", "ocsf") if name == "export"
                          else ("table", "json", "csv"), default="table",
                          help="export: ocsf = each finding as an OCSF Detection/Compliance Finding (JSON lines)"
                          if name == "export" else None)
        if name in ("findings", "export", "devices"):
            view.add_argument("--since", metavar="RFC3339")
            view.add_argument("--until", metavar="RFC3339")
        if name in ("findings", "devices"):
            view.add_argument("--probe")
            view.add_argument("--finding-id")
            view.add_argument("--os")
            view.add_argument("--tunnel-kind")
        if name == "findings":
            view.add_argument("--device")
            view.add_argument("--no-notes", action="store_true", help="leave out info-severity notes")
        if name == "devices":
            view.add_argument("--verdict", choices=("pass", "warn", "leak", "error"))
        if name == "finding-devices":
            view.add_argument("finding_id", metavar="FINDING_ID")
        if name in LISTS:
            view.add_argument("--limit", type=int, default=500 if name == "findings" else 100,
                              help="rows per page (the next page's --cursor goes to stderr)")
            view.add_argument("--cursor", help="continue from a previous page")
            view.add_argument("--all", action="store_true", help="every page, streamed as it arrives")
        if name in ("summary", "conformance"):
            view.add_argument("--days", type=int, default=30)
        if name == "flows":
            view.add_argument("--device", help="only this device id")
            view.add_argument("--app", help="only this application (executable, else command)")
            view.add_argument("--since", metavar="RFC3339", help="only flows last seen at or after")
            view.add_argument("--by", choices=("app", "device"),
                              help="leaked flows per application or per device instead of each flow")
        view.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    if args.view in LISTS:
        return _list(args)
    data = _fetch_flows(args) if args.view == "flows" else _fetch(args)
    out = sys.stdout
    if args.view == "export":
        out.write(data)
        return 0
    if args.format == "json":
        out.write(json.dumps(data, indent=2) + "\n")
    elif args.view == "summary":
        out.write(render_summary(data) if args.format == "table" else _csv(_summary_rows(data)))
    elif args.view == "conformance":
        out.write(render_conformance(data) if args.format == "table" else _csv(_conformance_rows(data)))
    else:
        rows = [_flatten(r) for r in data]
        columns = COLUMNS[f"flows-{args.by}" if args.view == "flows" and args.by else args.view]
        out.write(_table(rows, columns) if args.format == "table" else _csv(rows))
    return 0


COLUMNS = {
    "devices": ("hostname", "device_id", "os", "verdict", "tunnel_state", "last_report_at", "stale",
                "agent.spool_depth", "agent.dropped", "agent.last_error"),
    "findings": ("started_at", "hostname", "device_id", "probe", "finding_id", "severity", "summary"),
    "audit": ("at", "actor", "action", "detail"),
    "flows": ("last_seen", "hostname", "device_id", "app", "proto", "dst", "dport", "count", "finding_id",
              "first_seen"),
    "flows-app": ("app", "devices", "flows", "packets", "first_seen", "last_seen"),
    "flows-device": ("hostname", "device_id", "apps", "flows", "packets", "first_seen", "last_seen"),
}
COLUMNS["finding-devices"] = COLUMNS["devices"]


def _list(args: argparse.Namespace) -> int:
    """One page (the next cursor on stderr), or with --all every page,
    written as each arrives: memory stays one page whatever the fleet."""
    out = sys.stdout
    columns = COLUMNS[args.view]
    url, params = _list_query(args)
    first = True
    writer = None
    if args.format == "json":
        out.write("[")
    while url:
        rows, url = _get_page(args, url, params)
        params = None  # the next link carries them
        if args.format == "json":
            for row in rows:
                out.write(("\n" if first else ",\n") + json.dumps(row))
                first = False
        elif args.format == "csv":
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
            writer.writerows(_flatten(_plain(r)) for r in rows)
        else:
            out.write(_table([_flatten(_plain(r)) for r in rows], columns, header=first) if rows or first else "")
            first = False
        out.flush()
        if not args.all:
            if url:
                print(f"more: --cursor {_cursor_of(url)}  (or --all)", file=sys.stderr)
            break
    if args.format == "json":
        out.write("\n]\n")
    return 0


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """An audit entry's detail is one cell (its JSON), not a column per key."""
    return {**row, "detail": json.dumps(row["detail"], sort_keys=True)} if "detail" in row else row


def _cursor_of(url: str) -> str:
    from urllib.parse import parse_qs, urlsplit
    return parse_qs(urlsplit(url).query).get("cursor", [""])[0]


def _list_query(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    base = args.collector.rstrip("/") + "/api/v1"
    params: dict[str, Any] = {"limit": args.limit, "cursor": args.cursor}
    if args.view in ("devices", "findings"):
        params.update(since=args.since, until=args.until, probe=args.probe, finding_id=args.finding_id,
                      os=args.os, tunnel_kind=args.tunnel_kind)
    if args.view == "devices":
        params["verdict"] = args.verdict
        return base + "/devices", params
    if args.view == "findings":
        params.update(device_id=args.device, notes="false" if args.no_notes else None)
        return base + "/findings", params
    if args.view == "audit":
        return base + "/admin/audit", params
    from urllib.parse import quote
    return base + f"/findings/{quote(args.finding_id, safe='')}/devices", params


def _get_page(args: argparse.Namespace, url: str, params: dict[str, Any] | None) -> tuple[list, str | None]:
    response = _request(args, url, params)
    next_url = response.links.get("next", {}).get("url")
    return response.json(), next_url


def _request(args: argparse.Namespace, url: str, params: dict[str, Any] | None) -> Any:
    import requests

    from leakcheck.agent.uploader import verify_setting

    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read {args.token_file}: {exc}") from None
    try:
        response = requests.get(url, params={k: v for k, v in (params or {}).items() if v is not None},
                                headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                verify=verify_setting(args.ca_file))
    except requests.RequestException as exc:
        raise FleetError(f"cannot reach {args.collector}: {exc}") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise FleetError(f"collector answered {response.status_code}: {detail}")
    return response


def _get(args: argparse.Namespace, path: str, params: dict[str, Any]) -> Any:
    return _request(args, args.collector.rstrip("/") + "/api/v1" + path, params).json()


def _fetch_flows(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.by:
        return _get(args, "/flows/summary", {"by": args.by, "since": args.since})
    flows: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:  # every page: the cursor is stable while flows are updated
        page = _get(args, "/flows", {"device": args.device, "app": args.app, "since": args.since,
                                     "cursor": cursor, "limit": 5000})
        flows += page["flows"]
        cursor = page["next_cursor"]
    return flows


def _fetch(args: argparse.Namespace) -> Any:
    base = args.collector.rstrip("/") + "/api/v1"
    path, params = {
        "summary": ("/fleet/summary", {"days": getattr(args, "days", 30)}),
        "conformance": ("/conformance", {"days": getattr(args, "days", 30)}),
        "export": ("/export", {"format": args.format if args.format in ("json", "ocsf") else "csv",
                               "since": getattr(args, "since", None), "until": getattr(args, "until", None)}),
    }[args.view]
    response = _request(args, base + path, params)
    return response.text if args.view == "export" else response.json()


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[prefix + key] = value
    return flat


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...], header: bool = True) -> str:
    if not rows:
        return "(none)\n" if header else ""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    head = [line(columns), line(["-" * w for w in widths])] if header else []
    return "\n".join([*head, *map(line, cells)]) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    names = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"metric": "devices", "key": "", "value": summary["devices"]},
            {"metric": "stale_devices", "key": "", "value": summary["stale_devices"]},
            {"metric": "clone_events", "key": "", "value": summary["clone_events"]}]
    rows += [{"metric": "verdict", "key": k, "value": v} for k, v in summary["devices_per_verdict"].items()]
    rows += [{"metric": "finding", "key": f["finding_id"], "value": f["devices"]}
             for f in summary["devices_per_finding"]]
    rows += [{"metric": "os", "key": k, "value": v} for k, v in summary["devices_per_os"].items()]
    rows += [{"metric": f"trend.{k}", "key": d["day"], "value": v} for d in summary["trend"]
             for k, v in d.items() if k != "day"]
    rows += [{"metric": "reconnect_s", "key": r["hostname"], "value": r["reconnect_s"]}
             for r in summary["slowest_reconnects"]]
    return rows


def render_summary(s: dict[str, Any]) -> str:
    verdicts = s["devices_per_verdict"]
    parts = [f"Fleet: {s['devices']} devices, {verdicts.get('leak', 0)} leaking now, "
             f"{s['stale_devices']} stale, {s['clone_events']} refused enrollment(s) (clone or takeover attempts)", "",
             "Devices per verdict:",
             _table([{"verdict": k, "devices": v} for k, v in sorted(verdicts.items())], ("verdict", "devices")),
             "Devices per leak class (current findings):",
             _table(s.get("leak_classes", s["devices_per_finding"]), ("probe", "finding_id", "severity", "devices")),
             "Notes (info findings, not leaks):",
             _table(s.get("notes", []), ("probe", "finding_id", "devices")),
             "Devices per OS:",
             _table([{"os": k, "devices": v} for k, v in sorted(s["devices_per_os"].items())], ("os", "devices")),
             "Reports per day:",
             _table([{"day": d["day"], "reports": sum(v for k, v in d.items() if k != "day"),
                      "leak": d.get("leak", 0), "warn": d.get("warn", 0), "error": d.get("error", 0)}
                     for d in s["trend"]], ("day", "reports", "leak", "warn", "error")),
             "Slowest reconnects:",
             _table(s["slowest_reconnects"], ("hostname", "device_id", "reconnect_s"))]
    return "\n".join(parts)


def _conformance_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"day": "latest", "recommendation": r["key"], "devices": r["devices"], "checked": r["checked"],
             "meets": r["meets"], "fails": r["fails"]} for r in data["recommendations"]]
    rows += [{"day": d["day"], "recommendation": k, **v} for d in data["trend"]
             for k, v in d["recommendations"].items()]
    return rows


def render_conformance(data: dict[str, Any]) -> str:
    """The conformance table (latest report per device), then the share meeting each one per day."""
    table = [{"recommendation": r["key"], "checked": r["checked"], "meets": r["meets"], "fails": r["fails"],
              "not_checked": r["devices"] - r["checked"]} for r in data["recommendations"]]
    keys = [r["key"] for r in data["recommendations"]]
    trend = [{"day": d["day"], **{k: (f"{d['recommendations'][k]['meets']}/{d['recommendations'][k]['checked']}"
                                     if d["recommendations"][k]["checked"] else "-") for k in keys}}
             for d in data["trend"]]
    return "\n".join([f"NCSC conformance: {data['devices']} devices, by their latest report", "",
                      _table(table, ("recommendation", "checked", "meets", "fails", "not_checked")),
                      "Per day (devices meeting / checked):", _table(trend, ("day", *keys))])
