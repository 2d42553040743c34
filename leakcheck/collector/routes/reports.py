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
    status, body, headers = await store_submission(request.app.state, _validated(await request.body()), token)
    if status >= 400:
        raise HTTPException(status, json.loads(body)["detail"], headers=headers)
    return Response(body, status_code=status, media_type="application/json")


async def store_submission(state: Any, report: ReportIn, token: str) -> tuple[int, bytes, dict[str, str]]:
    """Hand a validated report to the group commit; the answer's status,
    JSON body and extra headers (the route's and FastSubmit's alike)."""
    # Stored as submitted: fields the agent left out (optional ones) stay out.
    body = report.model_dump_json(by_alias=True, exclude_unset=True)
    outcome = await state.ingest.submit(Pending(report, body, security.token_hash(token)))
    state.metrics.count(outcome.metric)
    if outcome.status >= 400:
        headers = {"WWW-Authenticate": "Bearer"} if outcome.status == 401 else {}
        if outcome.retry_after is not None:
            headers = {"Retry-After": str(outcome.retry_after)}
        return outcome.status, json.dumps({"detail": outcome.detail}).encode(), headers
    return outcome.status, json.dumps({"report_id": report.report_id, "stored": outcome.status == 201}).encode(), {}


class FastSubmit:
    """ASGI middleware: a well-formed submission with a bearer token goes
    straight to the group commit, past the framework's routing, dependency
    solving and exception layers (a third of a worker's CPU per report in
    the ingest benchmark). Anything else (no token, a document that does
    not validate, every other path) goes on to the app unchanged, body
    replayed, so refusals and 422s come from one place: the route. Sits
    inside BodyLimit, so an oversize body never gets here."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/api/v1/reports":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope.get("headers", ()))
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        report = None
        if token:
            try:
                report = ReportIn.model_validate_json(raw)
            except ValidationError:
                pass
        if report is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        status, body, extra = await store_submission(scope["app"].state, report, token)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _bearer(headers: Any) -> str | None:
    """What HTTPBearer would accept: `Authorization: Bearer <credentials>`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()[:200]
            return None
    return None


def _replay(raw: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()
    return replay


def _validated(raw: bytes) -> ReportIn:
    try:
        return ReportIn.model_validate_json(raw)
    except ValidationError as exc:
        # Where FastAPI would have put them: under "body".
        raise RequestValidationError([dict(e, loc=("body", *e.get("loc", ()))) for e in exc.errors(
            include_url=False, include_input=False, include_context=False)]) from None
