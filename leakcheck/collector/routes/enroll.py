"""POST /api/v1/enroll: fleet secret -> per-device token."""

from __future__ import annotations

import math
import threading
import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from leakcheck.collector import security
from leakcheck.collector.contract import EnrollIn, EnrollOut
from leakcheck.collector.deps import bearer, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import CloneSuspected, Store

router = APIRouter(prefix="/api/v1", tags=["enrollment"])


class FailureLimit:
    """Wrong secrets per client address in a sliding window (per replica):
    guessing the fleet secret at line rate is no longer possible."""

    def __init__(self, limit: int, window_s: float, max_clients: int = 10_000):
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None if it may now."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.window_s]
            self._failures[client] = recent
            if len(recent) < self.limit:
                return None
            return max(1, math.ceil(recent[0] + self.window_s - now))

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) >= self.max_clients:
                self._failures.clear()  # bounded memory; a flood of addresses only resets the count
            self._failures.setdefault(client, []).append(time.monotonic())


@router.post("/enroll", response_model=EnrollOut, status_code=201,
             responses={403: {"description": "wrong enrollment secret"},
                        429: {"description": "too many wrong secrets from this address; see Retry-After"},
                        409: {"description": "the device id is enrolled: re-enrolling needs its current "
                                             "token (Authorization: Bearer) or an admin's approval"}})
def enroll(request: EnrollIn, http: Request, store: Store = Depends(get_store),
           settings: Settings = Depends(get_settings),
           credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> EnrollOut:
    limiter: FailureLimit = http.app.state.enroll_failures
    client = http.client.host if http.client else "unknown"
    wait = limiter.retry_after(client)
    if wait is not None:
        raise HTTPException(429, "too many wrong enrollment secrets from this address",
                            headers={"Retry-After": str(wait)})
    if not security.secret_matches(request.secret, settings.enroll_secret):
        limiter.failed(client)
        raise HTTPException(403, "wrong enrollment secret (or enrollment is closed)")
    current = credentials.credentials[:200] if credentials else None
    try:
        token = store.enroll_or_clone(request, clone_grace_s=2 * settings.device_interval_s,
                                      current_token=current)
    except CloneSuspected as refused:
        why = ("another installation that reported recently holds it: a cloned machine?"
               if str(refused) == "clone" else "re-enrolling needs the device's current token")
        raise HTTPException(409, f"device id {request.device.id} is enrolled; {why} An admin approves a "
                                 "new enrollment with `leakcheck collector token revoke-device "
                                 f"{request.device.id}`.") from None
    return EnrollOut(device_id=request.device.id, token=token)
