"""Devices and their latest state (analyst tokens only)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path

from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)
DevicePath = Path(pattern=Contract.DEVICE_ID)


@router.get("")
def list_devices(store: Store = Depends(get_store), settings: Settings = Depends(get_settings)) -> list[dict[str, Any]]:
    return store.devices(time.time(), settings.device_interval_s)


@router.get("/{device_id}", responses={404: {"description": "no such device"}})
def device(device_id: str = DevicePath, store: Store = Depends(get_store),
           settings: Settings = Depends(get_settings)) -> dict[str, Any]:
    view = store.device(device_id, time.time(), settings.device_interval_s)
    if view is None:
        raise HTTPException(404, "no such device")
    return view


@router.get("/{device_id}/latest", responses={404: {"description": "no report from this device yet"}})
def latest(device_id: str = DevicePath, store: Store = Depends(get_store)) -> dict[str, Any]:
    report = store.latest_report(device_id)
    if report is None:
        raise HTTPException(404, "no report from this device yet")
    return report
