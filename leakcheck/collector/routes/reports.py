"""POST /api/v1/reports: a device submits one report (idempotent on report_id).

The handler runs in the event loop: the body is validated there, then the
submission joins the replica's group commit (leakcheck.collector.ingest),
which also checks the token and the rate limit in the same transaction.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from leakcheck.collector import security
from leakcheck.collector.contract import ReportIn, SubmitOut
from leakcheck.collector.deps import submitted_token
from leakcheck.collector.store import Pending

router = APIRouter(prefix="/api/v1", tags=["reports"])


@router.post("/reports", response_model=SubmitOut, status_code=201,
             responses={200: {"model": SubmitOut, "description": "already stored; nothing new stored"},
                        401: {"description": "missing, unknown or revoked token"},
                        403: {"description": "not a device token, or the report is for another device"},
                        409: {"description": "report_id belongs to another device"},
                        413: {"description": "body too large"},
                        429: {"description": "rate limited; see Retry-After"}})
async def submit(report: ReportIn, request: Request, token: str = Depends(submitted_token)) -> Response:
    body = report.model_dump_json(by_alias=True, exclude={"agent"} if report.agent is None else None)
    outcome = await request.app.state.ingest.submit(Pending(report, body, security.token_hash(token)))
    request.app.state.metrics.count(outcome.metric)
    if outcome.status >= 400:
        headers = {"WWW-Authenticate": "Bearer"} if outcome.status == 401 else None
        if outcome.retry_after is not None:
            headers = {"Retry-After": str(outcome.retry_after)}
        raise HTTPException(outcome.status, outcome.detail, headers=headers)
    answer = json.dumps({"report_id": report.report_id, "stored": outcome.status == 201})
    return Response(answer, status_code=outcome.status, media_type="application/json")
