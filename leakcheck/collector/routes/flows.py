"""Flows of the agents' live watch (leakcheck.flows/1, leakcheck/flows.py).

POST /api/v1/flows: a device submits a flows document (device token;
idempotent on batch_id, acknowledged by it). GET /api/v1/flows: the leaked
flows, per device and application, with cursor pagination; GET
/api/v1/flows/summary?by=app|device: the fleet views (analyst tokens).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from leakcheck.collector import security
from leakcheck.collector.contract import FlowsIn, FlowsOut, Time, parse_time
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_settings, submitted_token
from leakcheck.collector.flowstore import FlowStore
from leakcheck.collector.settings import Settings
from leakcheck.flows import FlowsContract
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1", tags=["flows"])
Since = Annotated[Optional[Time], Query(description="RFC 3339; flows last seen at or after")]
App = Annotated[Optional[str], Query(max_length=FlowsContract.PATH_MAX,
                                     description="application: the executable, else the command")]


def get_flow_store(request: Request) -> FlowStore:
    return request.app.state.flow_store


def _epoch(text: Optional[str]) -> Optional[float]:
    return parse_time(text).timestamp() if text else None


@router.post("/flows", response_model=FlowsOut, status_code=201,
             responses={200: {"model": FlowsOut, "description": "already stored; nothing new stored"},
                        401: {"description": "missing, unknown or revoked token"},
                        403: {"description": "not a device token, or the flows are another device's"},
                        409: {"description": "batch_id belongs to another device"},
                        413: {"description": "body too large"},
                        429: {"description": "storage budget spent; see Retry-After"}})
def submit(doc: FlowsIn, request: Request, token: str = Depends(submitted_token),
           store: FlowStore = Depends(get_flow_store), settings: Settings = Depends(get_settings)) -> Response:
    # The stored bytes count against the device's daily budget, as a report's do.
    size = _body_size(request) or len(doc.model_dump_json(by_alias=True))
    outcome = store.submit(doc, security.token_hash(token), size, settings.device_daily_bytes)
    request.app.state.metrics.count(outcome.metric)
    if outcome.status >= 400:
        headers = {"WWW-Authenticate": "Bearer"} if outcome.status == 401 else None
        if outcome.retry_after is not None:
            headers = {"Retry-After": str(outcome.retry_after)}
        raise HTTPException(outcome.status, outcome.detail, headers=headers)
    answer = json.dumps({"batch_id": doc.batch_id, "stored": outcome.status == 201})
    return Response(answer, status_code=outcome.status, media_type="application/json")


def _body_size(request: Request) -> int | None:
    try:
        return int(request.headers.get("content-length", ""))
    except ValueError:
        return None  # chunked: measured from the document


@router.get("/flows", dependencies=[Depends(analyst_principal)], responses=AUTH_RESPONSES)
def list_flows(device: Optional[str] = Query(None, pattern=Contract.DEVICE_ID), app: App = None,
               since: Since = None, cursor: str = Query("0", pattern=r"^[0-9]{1,18}$"),
               limit: int = Query(500, ge=1, le=5000),
               store: FlowStore = Depends(get_flow_store)) -> dict[str, Any]:
    """Leaked flows, oldest stored first; pass `next_cursor` back as `cursor`."""
    return store.list(device, app, _epoch(since), int(cursor), limit)


@router.get("/flows/summary", dependencies=[Depends(analyst_principal)], responses=AUTH_RESPONSES)
def flows_summary(by: Literal["app", "device"] = "app", since: Since = None,
                  store: FlowStore = Depends(get_flow_store)) -> list[dict[str, Any]]:
    """Leaked flows per application (on how many devices) or per device (how many applications)."""
    return store.summary(by, _epoch(since))
