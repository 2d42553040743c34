"""`leakcheck fleet summary|devices|findings|flows|export|conformance`: fleet reports for
security teams, pulled from the collector with a read-only analyst token.
`flows` lists the flows the agents' live watch saw leave outside the tunnel
(every page of the API's cursor), or with `--by app|device` the leaked flows
per application or per device."""

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


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("fleet", help="fleet reports from the collector (analyst token)")
    views = parser.add_subparsers(dest="view", metavar="VIEW", required=True)
    for name, text in (("summary", "devices per verdict, finding, OS; trend; slowest reconnects"),
                       ("devices", "every device and its latest state"),
                       ("findings", "findings by probe, finding id, device and time range"),
                       ("flows", "flows leaked outside the tunnel (live watch), per device or application"),
                       ("export", "every report in a time range (CSV, JSON lines, or OCSF findings)"),
                       ("conformance", "devices meeting each NCSC recommendation, and the daily trend")):
        view = views.add_parser(name, help=text)
        view.add_argument("--collector", metavar="URL", required=True)
        view.add_argument("--token-file", metavar="FILE", required=True, help="analyst token")
        view.add_argument("--ca-file", metavar="FILE", default="", help="CA bundle (default: system store)")
        view.add_argument("--format", choices=("table", "json", "csv", "ocsf") if name == "export"
                          else ("table", "json", "csv"), default="table",
                          help="export: ocsf = each finding as an OCSF Detection/Compliance Finding (JSON lines)"
                          if name == "export" else None)
        if name in ("findings", "export"):
            view.add_argument("--since", metavar="RFC3339")
            view.add_argument("--until", metavar="RFC3339")
        if name == "findings":
            view.add_argument("--probe")
            view.add_argument("--finding-id")
            view.add_argument("--device")
            view.add_argument("--limit", type=int, default=500)
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
    "findings": ("started_at", "device_id", "probe", "finding_id", "severity", "summary"),
    "flows": ("last_seen", "hostname", "device_id", "app", "proto", "dst", "dport", "count", "finding_id",
              "first_seen"),
    "flows-app": ("app", "devices", "flows", "packets", "first_seen", "last_seen"),
    "flows-device": ("hostname", "device_id", "apps", "flows", "packets", "first_seen", "last_seen"),
}


def _get(args: argparse.Namespace, path: str, params: dict[str, Any]) -> Any:
    import requests

    from leakcheck.agent.uploader import verify_setting

    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read {args.token_file}: {exc}") from None
    try:
        response = requests.get(args.collector.rstrip("/") + "/api/v1" + path,
                                params={k: v for k, v in params.items() if v is not None},
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
    return response.json()


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
    import requests

    from leakcheck.agent.uploader import verify_setting

    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read {args.token_file}: {exc}") from None
    base = args.collector.rstrip("/") + "/api/v1"
    path, params = {
        "summary": ("/fleet/summary", {"days": getattr(args, "days", 30)}),
        "devices": ("/devices", {}),
        "conformance": ("/conformance", {"days": getattr(args, "days", 30)}),
        "findings": ("/findings", {"probe": getattr(args, "probe", None),
                                   "finding_id": getattr(args, "finding_id", None),
                                   "device_id": getattr(args, "device", None),
                                   "limit": getattr(args, "limit", None)}),
        "export": ("/export", {"format": args.format if args.format in ("json", "ocsf") else "csv"}),
    }[args.view]
    if args.view in ("findings", "export"):
        params.update(since=args.since, until=args.until)
    try:
        response = requests.get(base + path, params={k: v for k, v in params.items() if v is not None},
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


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "(none)\n"
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)]) + "\n"


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
             "Devices per current finding:",
             _table(s["devices_per_finding"], ("probe", "finding_id", "devices")),
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
