"""Admin endpoints (admin tokens only): tokens, re-enrollment approvals and
the audit log. Every change is recorded in the audit log (who, what, when)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from leakcheck.collector import audit
from leakcheck.collector.deps import ADMIN_RESPONSES, admin_principal, get_store
from leakcheck.collector.routes.paging import Cursor, bad_cursor, paged
from leakcheck.collector.store import Principal, Store
from leakcheck.collector.views import BadCursor
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], responses=ADMIN_RESPONSES)


class TokenIn(BaseModel):
    role: Literal["analyst", "admin"] = "analyst"
    label: str = Field("", max_length=200)


@router.get("/tokens")
def list_tokens(include_revoked: bool = False, store: Store = Depends(get_store),
                _: Principal = Depends(admin_principal)) -> list[dict[str, Any]]:
    """Ids, roles (kind), labels, devices and dates; never token values."""
    return store.list_tokens(include_revoked=include_revoked)


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, store: Store = Depends(get_store),
                 who: Principal = Depends(admin_principal)) -> dict[str, str]:
    """A new analyst or admin token, answered once."""
    token = store.create_token(body.role, None, body.label)
    audit.record(store, audit.actor(who), "token.create", {"role": body.role, "label": body.label})
    return {"token": token, "role": body.role}


@router.delete("/tokens/{token_id}", responses={404: {"description": "no such live token"}})
def revoke_token(token_id: int = Path(ge=1, le=2**31 - 1), store: Store = Depends(get_store),
                 who: Principal = Depends(admin_principal)) -> dict[str, int]:
    count = store.revoke_tokens(token_id=token_id)
    if not count:
        raise HTTPException(404, "no such live token")
    audit.record(store, audit.actor(who), "token.revoke", {"id": token_id})
    return {"revoked": count}


@router.post("/devices/{device_id}/approve-enrollment")
def approve_enrollment(device_id: str = Path(pattern=Contract.DEVICE_ID), store: Store = Depends(get_store),
                       who: Principal = Depends(admin_principal)) -> dict[str, int]:
    """Revoke the device's tokens, which lets a new installation enroll its id."""
    count = store.revoke_device(device_id)
    audit.record(store, audit.actor(who), "enrollment.approve", {"device_id": device_id, "revoked": count})
    return {"revoked": count}


@router.get("/audit", responses={400: {"description": "bad cursor"}})
def audit_log(request: Request, response: Response, limit: int = Query(100, ge=1, le=1000),
              cursor: Cursor = None, store: Store = Depends(get_store),
              _: Principal = Depends(admin_principal)) -> list[dict[str, Any]]:
    """Admin actions, newest first: id, at, actor, action, detail."""
    try:
        return paged(request, response, audit.page(store, limit, cursor))
    except BadCursor as exc:
        raise bad_cursor(exc) from None
