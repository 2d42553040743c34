"""POST /api/v1/enroll: fleet secret -> per-device token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from leakcheck.collector import security
from leakcheck.collector.contract import EnrollIn, EnrollOut
from leakcheck.collector.deps import bearer, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import CloneSuspected, Store

router = APIRouter(prefix="/api/v1", tags=["enrollment"])


@router.post("/enroll", response_model=EnrollOut, status_code=201,
             responses={403: {"description": "wrong enrollment secret"},
                        409: {"description": "the device id is enrolled: re-enrolling needs its current "
                                             "token (Authorization: Bearer) or an admin's approval"}})
def enroll(request: EnrollIn, store: Store = Depends(get_store), settings: Settings = Depends(get_settings),
           credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> EnrollOut:
    if not security.secret_matches(request.secret, settings.enroll_secret):
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
