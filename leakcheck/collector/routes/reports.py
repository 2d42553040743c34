"""POST /api/v1/reports: a device submits one report (idempotent on report_id).

The handler runs in the event loop: the body is validated there, then the
submission joins the replica's group commit (leakcheck.collector.ingest),
which also checks the token and the rate limit in the same transaction.

This is the collector's hot path, so the body is validated straight from
its bytes (pydantic's JSON parser, ReportIn.model_validate_json) instead of
FastAPI's parse-to-dict-then-validate: the same model and the same strict
rules, about half the work per request. The OpenAPI document still
describes the body (openapi_extra), and invalid documents still answer
422 through the app's RequestValidationError handler (which answers 401/403
first for a bad token).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from leakcheck.collector import security
from leakcheck.collector.contract import ReportIn, SubmitOut
from leakcheck.collector.deps import submitted_token
from leakcheck.collector.store import Pending

router = APIRouter(prefix="/api/v1", tags=["reports"])

def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The model's JSON schema with its $defs written in place (the contract
    has no recursive types), so the operation carries its whole body schema."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _request_body() -> dict[str, Any]:
    schema = ReportIn.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": _inline(schema, schema.get("$defs", {}))}}}}


@router.post("/reports", response_model=SubmitOut, status_code=201, openapi_extra=_request_body(),
             responses={200: {"model": SubmitOut, "description": "already stored; nothing new stored"},
                        401: {"description": "missing, unknown or revoked token"},
                        403: {"description": "not a device token, or the report is for another device"},
                        409: {"description": "report_id belongs to another device"},
                        413: {"description": "body too large"},
                        422: {"description": "not a valid leakcheck.report/1 document"},
                        429: {"description": "rate limited; see Retry-After"}})
async def submit(request: Request, token: str = Depends(submitted_token)) -> Response:
    report = _validated(await request.body())
    # Stored as submitted: fields the agent left out (optional ones) stay out.
    body = report.model_dump_json(by_alias=True, exclude_unset=True)
    outcome = await request.app.state.ingest.submit(Pending(report, body, security.token_hash(token)))
    request.app.state.metrics.count(outcome.metric)
    if outcome.status >= 400:
        headers = {"WWW-Authenticate": "Bearer"} if outcome.status == 401 else None
        if outcome.retry_after is not None:
            headers = {"Retry-After": str(outcome.retry_after)}
        raise HTTPException(outcome.status, outcome.detail, headers=headers)
    answer = json.dumps({"report_id": report.report_id, "stored": outcome.status == 201})
    return Response(answer, status_code=outcome.status, media_type="application/json")


def _validated(raw: bytes) -> ReportIn:
    try:
        return ReportIn.model_validate_json(raw)
    except ValidationError as exc:
        # Where FastAPI would have put them: under "body".
        raise RequestValidationError([dict(e, loc=("body", *e.get("loc", ()))) for e in exc.errors(
            include_url=False, include_input=False, include_context=False)]) from None
