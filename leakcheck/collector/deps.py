"""FastAPI dependencies: the store, the settings, and who is calling."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Principal, Store

# The web page's cookie holds a session id (leakcheck.collector.store sessions),
# never a token; the API takes tokens only as Authorization: Bearer.
COOKIE = "leakcheck_session"
# What every analyst endpoint may answer besides its own results (OpenAPI).
AUTH_RESPONSES: dict[int | str, dict] = {
    401: {"description": "missing, unknown or revoked token (or expired session)"},
    403: {"description": "a device token: fleet data needs an analyst token"},
}
ADMIN_RESPONSES: dict[int | str, dict] = {
    401: AUTH_RESPONSES[401],
    403: {"description": "not an admin token (analyst and device tokens are refused)"},
}
_bearer = HTTPBearer(auto_error=False, description="A device token (submit only) or an analyst token (read only)")
# Enrollment: optional, the device's current token when it re-enrolls.
bearer = HTTPBearer(auto_error=False, description="Re-enrollment: the device's current token")


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None, store: Store) -> Principal:
    if credentials is None and request.cookies.get(COOKIE):
        principal = store.session_principal(request.cookies[COOKIE][:200])
        if principal is None:
            raise HTTPException(401, "session expired or ended: sign in again")
        return principal
    return _lookup(store, credentials.credentials if credentials else None)


def _lookup(store: Store, token: str | None) -> Principal:
    if not token:
        raise HTTPException(401, "missing token: send Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    principal = store.authenticate(token[:200])
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def submitted_token(request: Request,
                          credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
    """The token a submission came with, unchecked: the submission's own
    transaction checks it (leakcheck.collector.store.Store.submit_batch)."""
    token = credentials.credentials if credentials else None
    if not token:
        raise HTTPException(401, "missing token: send Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    return token[:200]


def refusal(request: Request) -> HTTPException | None:
    """For a submission that failed validation: the 401/403 its token earns,
    if any, so that a stranger learns nothing about what would be accepted."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    try:
        principal = _lookup(get_store(request), token)
    except HTTPException as exc:
        return exc
    if principal.kind != "device":
        return HTTPException(403, "only a device token can submit reports")
    return None


def analyst_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                      store: Store = Depends(get_store)) -> Principal:
    """An analyst or an admin (both read fleet data)."""
    principal = _principal(request, credentials, store)
    if principal.kind not in ("analyst", "admin"):
        raise HTTPException(403, "device tokens cannot read fleet data; use an analyst token")
    return principal


def admin_principal(principal: Principal = Depends(analyst_principal)) -> Principal:
    """Tokens, webhooks, re-enrollment approvals, the audit log: admins only."""
    if principal.kind != "admin":
        raise HTTPException(403, "this needs an admin token (`leakcheck collector token create --role admin`)")
    return principal
