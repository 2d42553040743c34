"""Report export as CSV or JSON lines (analyst tokens only), streamed.

`format=ocsf`: every leak or posture finding of the reports in the range as
an OCSF Detection / Compliance Finding, one JSON object per line (the
mapping is documented in leakcheck.collector.alerts.ocsf)."""

from __future__ import annotations

import csv
import io
import json
from typing import Iterator, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from leakcheck.collector.alerts.ocsf import report_findings
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_store
from leakcheck.collector.routes.findings import Since, Until, epoch
from leakcheck.collector.store import Store

router = APIRouter(prefix="/api/v1", tags=["export"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)
COLUMNS = ("report_id", "device_id", "started_at", "finished_at", "trigger", "verdict",
           "tunnel_state", "tunnel_kind", "agent_version", "reconnect_s")


@router.get("/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(request: Request, format: Literal["csv", "json", "ocsf"] = Query("csv"), since: Since = None,
           until: Until = None, store: Store = Depends(get_store)) -> StreamingResponse:
    if format == "ocsf":
        docs = request.app.state.alerts_store.report_documents(epoch(since), epoch(until))
        return StreamingResponse((json.dumps(f) + "\n" for d in docs for f in report_findings(d, d["_started_ms"])),
                                 media_type="application/x-ndjson")
    rows = store.export(epoch(since), epoch(until))
    if format == "json":
        return StreamingResponse((json.dumps(r) + "\n" for r in rows), media_type="application/x-ndjson")
    return StreamingResponse(_csv(rows), media_type="text/csv",
                             headers={"Content-Disposition": "attachment; filename=reports.csv"})


def _csv(rows: Iterator[dict]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
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
