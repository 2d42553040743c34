"""Report export as CSV or JSON lines (analyst tokens only), streamed."""

from __future__ import annotations

import csv
import io
import json
from typing import Iterator, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_store
from leakcheck.collector.routes.findings import Since, Until, epoch
from leakcheck.collector.store import Store

router = APIRouter(prefix="/api/v1", tags=["export"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)
COLUMNS = ("report_id", "device_id", "started_at", "finished_at", "trigger", "verdict",
           "tunnel_state", "tunnel_kind", "agent_version", "reconnect_s")


@router.get("/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(format: Literal["csv", "json"] = Query("csv"), since: Since = None,
           until: Until = None, store: Store = Depends(get_store)) -> StreamingResponse:
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
