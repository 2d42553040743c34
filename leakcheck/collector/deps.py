"""FastAPI dependencies: the store, the settings, and who is calling."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Principal, Store

COOKIE = "leakcheck_token"
_bearer = HTTPBearer(auto_error=False, description="A device token (submit only) or an analyst token (read only)")


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None, store: Store) -> Principal:
    token = credentials.credentials if credentials else request.cookies.get(COOKIE)
    if not token:
        raise HTTPException(401, "missing token: send Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    principal = store.authenticate(token[:200])
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return principal


def device_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                     store: Store = Depends(get_store)) -> Principal:
    principal = _principal(request, credentials, store)
    if principal.kind != "device":
        raise HTTPException(403, "only a device token can submit reports")
    return principal


def analyst_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                      store: Store = Depends(get_store)) -> Principal:
    principal = _principal(request, credentials, store)
    if principal.kind != "analyst":
        raise HTTPException(403, "device tokens cannot read fleet data; use an analyst token")
    return principal
