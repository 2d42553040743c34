"""The fleet web page's flows page (/flows): leaked flows per application and
per device, and the latest flows, from the agents' live watch. Same sign-in,
headers and escaping as the rest of the page (routes/web.py)."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from leakcheck.collector.deps import get_store
from leakcheck.collector.flowstore import FlowStore
from leakcheck.collector.routes.flows import get_flow_store
from leakcheck.collector.routes.web import _analyst_or_login, _page
from leakcheck.collector.store import Store

router = APIRouter(include_in_schema=False)
LATEST = 200  # rows of the latest-flows table


def _cell(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _table(table_id: str, columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"<p id={table_id}>none</p>"
    head = "".join(f"<th>{escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(key))}</td>" for key, _ in columns) + "</tr>"
                   for r in rows)
    return f"<table id={table_id}><tr>{head}</tr>{body}</table>"


@router.get("/flows")
def flows_page(request: Request, store: Store = Depends(get_store),
               flow_store: FlowStore = Depends(get_flow_store)) -> Response:
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    per_app = flow_store.summary("app", None)
    per_device = flow_store.summary("device", None)
    for row in per_device:
        row["device"] = f"{row['hostname'] or ''} ({row['device_id']})"
    latest = flow_store.latest(LATEST)
    for flow in latest:
        flow["destination"] = f"{flow['proto']} {flow['dst']}:{flow['dport'] if flow['dport'] is not None else '-'}"
        flow["who"] = flow["app"] or "(unknown sender)"
        flow["device"] = flow["hostname"] or flow["device_id"]
    links = "".join(f"<li><a href=\"/devices/{quote(r['device_id'], safe='')}\">{_cell(r['device'])}</a></li>"
                    for r in per_device)
    body = ["<p><a href=/>fleet overview</a></p><h1>Leaked flows (live watch)</h1>",
            "<p>Real connections the agents saw leave outside the tunnel, with the application that sent them.</p>",
            "<h2>Per application</h2>",
            _table("flows-by-app", (("app", "application"), ("devices", "devices"), ("flows", "flows"),
                                    ("packets", "packets"), ("first_seen", "first seen"),
                                    ("last_seen", "last seen")), per_app),
            "<h2>Per device</h2>",
            _table("flows-by-device", (("device", "device"), ("apps", "applications"), ("flows", "flows"),
                                       ("packets", "packets"), ("first_seen", "first seen"),
                                       ("last_seen", "last seen")), per_device),
            f"<ul>{links}</ul>" if links else "",
            "<h2>Latest flows</h2>",
            _table("flows-latest", (("last_seen", "last seen"), ("device", "device"), ("who", "application"),
                                    ("destination", "destination"), ("finding_id", "finding"),
                                    ("count", "packets"), ("summary", "summary")), latest)]
    return _page("leakcheck fleet: leaked flows", "".join(body))
