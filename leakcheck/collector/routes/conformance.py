"""Fleet conformance to the NCSC recommendations: the API (analyst tokens) and
its web page (analyst session), both from leakcheck.collector.conformance."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from leakcheck.collector.conformance import conformance as compute
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_store
from leakcheck.collector.routes.web import _analyst_or_login, _page
from leakcheck.collector.store import Store

router = APIRouter()


@router.get("/api/v1/conformance", tags=["fleet"], dependencies=[Depends(analyst_principal)],
            responses=AUTH_RESPONSES)
def conformance(days: int = Query(30, ge=1, le=366), store: Store = Depends(get_store)) -> dict[str, Any]:
    """Per recommendation (key of leakcheck.report.RECOMMENDATIONS): devices checked,
    meeting and failing it by their latest report, and the same per day."""
    return compute(store.engine, time.time(), days)


@router.get("/conformance", include_in_schema=False)
def conformance_page(request: Request, store: Store = Depends(get_store)) -> Response:
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    data = compute(store.engine, time.time(), 30)
    rows = "".join(
        f"<tr id=\"r-{escape(r['key'])}\"><td title=\"{escape(r['guidance'])}\">{escape(r['key'])}</td>"
        f"<td>{r['checked']}</td><td class=pass>{r['meets']}</td><td class=leak>{r['fails']}</td>"
        f"<td>{r['devices'] - r['checked']}</td><td>{_share(r)}</td></tr>" for r in data["recommendations"])
    keys = [r["key"] for r in data["recommendations"]]
    trend = "".join(
        f"<tr><td>{escape(day['day'])}</td>"
        + "".join(f"<td>{_share(day['recommendations'][k])}</td>" for k in keys) + "</tr>"
        for day in data["trend"])
    body = ("<p><a href=/>fleet overview</a></p><h1>NCSC conformance</h1>"
            f"<p id=conf-devices>{data['devices']} devices, by their latest report. A device meets a "
            "recommendation when every probe that checked it passed; skipped probes did not check it.</p>"
            "<table id=conformance><tr><th>recommendation</th><th>checked</th><th>meet</th><th>fail</th>"
            f"<th>not checked</th><th>meeting</th></tr>{rows}</table>"
            "<h2>Trend (share of checked devices meeting, per day)</h2><table id=conf-trend><tr><th>day</th>"
            + "".join(f"<th>{escape(k)}</th>" for k in keys) + f"</tr>{trend}</table>")
    return _page("leakcheck: conformance", body)


def _share(row: dict[str, Any]) -> str:
    return f"{100 * row['meets'] // row['checked']}%" if row["checked"] else "-"
