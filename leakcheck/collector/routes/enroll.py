"""POST /api/v1/enroll: fleet secret -> per-device token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from leakcheck.collector import security
from leakcheck.collector.contract import EnrollIn, EnrollOut
from leakcheck.collector.deps import get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import CloneSuspected, Store

router = APIRouter(prefix="/api/v1", tags=["enrollment"])


@router.post("/enroll", response_model=EnrollOut, status_code=201,
             responses={403: {"description": "wrong enrollment secret"},
                        409: {"description": "another installation holds this device id (clone)"}})
def enroll(request: EnrollIn, store: Store = Depends(get_store),
           settings: Settings = Depends(get_settings)) -> EnrollOut:
    if not security.secret_matches(request.secret, settings.enroll_secret):
        raise HTTPException(403, "wrong enrollment secret (or enrollment is closed)")
    try:
        token = store.enroll_or_clone(request, clone_grace_s=2 * settings.device_interval_s)
    except CloneSuspected:
        raise HTTPException(409, "this device id is held by another installation that reported "
                                 "recently: a cloned machine? Revoke the device to re-enroll it.") from None
    return EnrollOut(device_id=request.device.id, token=token)
