"""GET /api/v1/advisories: the VPN client advisory table the admin placed on
the collector (`--advisories-file`), for agents to cache (posture-updates).

Any live token may read it (devices fetch it; it holds no fleet data). The
file is validated (leakcheck.advisories.parse) each time it changes, so a
broken table is a 503 naming the problem and never reaches an agent; its
SHA-256 is the ETag, so an agent with the current copy gets a 304."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from leakcheck import advisories
from leakcheck.collector.deps import _bearer, _lookup, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store

router = APIRouter(tags=["advisories"])
MAX_BYTES = advisories.MAX_BYTES


def _any_token(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
               store: Store = Depends(get_store)) -> None:
    _lookup(store, credentials.credentials if credentials else None)


@router.get("/api/v1/advisories", dependencies=[Depends(_any_token)],
            responses={304: {"description": "the agent's copy (If-None-Match) is current"},
                       401: {"description": "missing, unknown or revoked token"},
                       404: {"description": "no advisory table configured on this collector"},
                       503: {"description": "the configured table cannot be read or is malformed"}})
def table(request: Request, settings: Settings = Depends(get_settings)) -> Any:
    """The advisory table as the admin placed it (schema leakcheck.advisories/1)."""
    if not settings.advisories_file:
        raise HTTPException(404, "no advisory table configured (leakcheck collector serve --advisories-file)")
    path = Path(settings.advisories_file)
    try:
        raw = path.read_bytes()[:MAX_BYTES + 1]
        if len(raw) > MAX_BYTES:
            raise ValueError(f"over {MAX_BYTES} bytes")
        advisories.parse(json.loads(raw), path.name)
    except (OSError, ValueError) as exc:  # AdvisoryError is a ValueError
        raise HTTPException(503, f"advisory table not served: {exc}") from None
    etag = '"' + hashlib.sha256(raw).hexdigest() + '"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(raw, media_type="application/json", headers={"ETag": etag, "Cache-Control": "no-cache"})
