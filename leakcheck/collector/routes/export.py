"""Exports as CSV or JSON lines (analyst tokens only), streamed: reports,
and every table the web page shows (devices, findings, a finding's devices,
the summary's tables). Rows are read a keyset page at a time, so an export
of 100,000 devices never holds them all in memory.

`format=ocsf` on /export: every leak or posture finding of the reports in
the range as an OCSF Detection / Compliance Finding, one JSON object per
line (the mapping is documented in leakcheck.collector.alerts.ocsf)."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any, Iterable, Iterator, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from leakcheck.collector import views
from leakcheck.collector.alerts.ocsf import report_findings
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_settings, get_store
from leakcheck.collector.routes.devices import device_filter
from leakcheck.collector.routes.findings import Since, Until, epoch, finding_filter
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1", tags=["export"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)
COLUMNS = ("report_id", "device_id", "started_at", "finished_at", "trigger", "verdict",
           "tunnel_state", "tunnel_kind", "agent_version", "reconnect_s")
DEVICE_COLUMNS = ("device_id", "hostname", "os", "os_version", "verdict", "tunnel_state", "tunnel_kind",
                  "last_report_at", "stale", "agent_version", "reconnect_s", "agent.spool_depth",
                  "agent.dropped", "agent.last_error")
FINDING_COLUMNS = ("started_at", "device_id", "hostname", "probe", "finding_id", "severity", "summary",
                   "report_id")
SUMMARY_COLUMNS = {"leak-classes": ("probe", "finding_id", "severity", "devices", "summary"),
                   "notes": ("probe", "finding_id", "severity", "devices", "summary"),
                   "trend": ("day", "pass", "warn", "leak", "error"),
                   "reconnects": ("device_id", "hostname", "reconnect_s")}
Format = Literal["csv", "json"]
STREAMED = {200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}}


@router.get("/export", response_class=StreamingResponse, responses=STREAMED)
def export(request: Request, format: Literal["csv", "json", "ocsf"] = Query("csv"), since: Since = None,
           until: Until = None, store: Store = Depends(get_store)) -> StreamingResponse:
    """Every report in the time range; `ocsf`: its findings as OCSF findings."""
    if format == "ocsf":
        docs = request.app.state.alerts_store.report_documents(epoch(since), epoch(until))
        return StreamingResponse((json.dumps(f) + "\n" for d in docs for f in report_findings(d, d["_started_ms"])),
                                 media_type="application/x-ndjson")
    return stream(store.export(epoch(since), epoch(until)), format, COLUMNS, "reports")


@router.get("/export/devices", response_class=StreamingResponse, responses=STREAMED)
def export_devices(format: Format = Query("csv"), where: views.DeviceFilter = Depends(device_filter),
                   store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
                   ) -> StreamingResponse:
    """Every device matching the filters of /api/v1/devices."""
    rows = views.iter_devices(store, time.time(), settings.device_interval_s, where)
    return stream(rows, format, DEVICE_COLUMNS, "devices")


@router.get("/export/findings", response_class=StreamingResponse, responses=STREAMED)
def export_findings(format: Format = Query("csv"), where: views.FindingFilter = Depends(finding_filter),
                    store: Store = Depends(get_store)) -> StreamingResponse:
    """Every finding matching the filters of /api/v1/findings."""
    return stream(views.iter_findings(store, where), format, FINDING_COLUMNS, "findings")


@router.get("/export/findings/{finding_id}/devices", response_class=StreamingResponse, responses=STREAMED)
def export_finding_devices(finding_id: str = Path(max_length=Contract.FINDING_ID_MAX, pattern=Contract.FINDING_ID),
                           format: Format = Query("csv"), store: Store = Depends(get_store),
                           settings: Settings = Depends(get_settings)) -> StreamingResponse:
    rows = views.iter_devices(store, time.time(), settings.device_interval_s,
                              views.DeviceFilter(finding_id=finding_id))
    return stream(rows, format, DEVICE_COLUMNS, f"devices-{finding_id}")


@router.get("/export/summary/{table}", response_class=StreamingResponse, responses=STREAMED)
def export_summary(table: Literal["leak-classes", "notes", "trend", "reconnects"], format: Format = Query("csv"),
                   days: int = Query(30, ge=1, le=366), store: Store = Depends(get_store),
                   settings: Settings = Depends(get_settings)) -> StreamingResponse:
    """One table of the fleet summary (small: bounded by finding ids and days)."""
    if table in ("leak-classes", "notes"):
        rows: list[dict[str, Any]] = views.finding_classes(store)["leaks" if table == "leak-classes" else "notes"]
    else:
        summary = store.summary(time.time(), settings.device_interval_s, days)
        rows = summary["trend"] if table == "trend" else summary["slowest_reconnects"]
    return stream(iter(rows), format, SUMMARY_COLUMNS[table], table)


def stream(rows: Iterable[dict[str, Any]], format: str, columns: tuple[str, ...], name: str) -> StreamingResponse:
    if format == "json":
        return StreamingResponse((json.dumps(r) + "\n" for r in rows), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f"attachment; filename={name}.jsonl"})
    return StreamingResponse(_csv((flatten(r) for r in rows), columns), media_type="text/csv",
                             headers={"Content-Disposition": f"attachment; filename={name}.csv"})


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[prefix + key] = value
    return flat


def _csv(rows: Iterator[dict], columns: tuple[str, ...]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        # Neutralise spreadsheet formulas: a cell starting with = + - @ is text.
        writer.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v)
                         for k, v in row.items()})
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
