"""Devices and their latest state (analyst tokens only)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from leakcheck.collector import views
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_settings, get_store
from leakcheck.collector.routes.findings import Since, Until, epoch
from leakcheck.collector.routes.paging import Cursor, Limit, bad_cursor, paged
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)
DevicePath = Path(pattern=Contract.DEVICE_ID)
Word = Annotated[Optional[str], Query(max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


def device_filter(os: Word = None, verdict: Word = None, tunnel_kind: Word = None,
                  finding_id: Optional[str] = Query(None, max_length=Contract.FINDING_ID_MAX,
                                                    pattern=Contract.FINDING_ID),
                  probe: Optional[str] = Query(None, pattern=Contract.NAME, max_length=Contract.NAME_MAX),
                  since: Since = None, until: Until = None) -> views.DeviceFilter:
    """Filters shared by the device list, its export and the web page."""
    return views.DeviceFilter(os=os, verdict=verdict, tunnel_kind=tunnel_kind, finding_id=finding_id,
                              probe=probe, seen_since=epoch(since), seen_until=epoch(until))


@router.get("", responses={400: {"description": "bad cursor"}})
def list_devices(request: Request, response: Response, limit: Limit = 100, cursor: Cursor = None,
                 where: views.DeviceFilter = Depends(device_filter), store: Store = Depends(get_store),
                 settings: Settings = Depends(get_settings)) -> list[dict[str, Any]]:
    """Devices by hostname, a page at a time: follow `Link: rel="next"`.
    Filters: OS, verdict, tunnel kind, a current finding id or probe, and
    the latest report's start time (since/until)."""
    try:
        page = views.device_page(store, time.time(), settings.device_interval_s, limit, cursor, where)
    except views.BadCursor as exc:
        raise bad_cursor(exc) from None
    return paged(request, response, page)


@router.get("/{device_id}", responses={404: {"description": "no such device"}})
def device(device_id: str = DevicePath, store: Store = Depends(get_store),
           settings: Settings = Depends(get_settings)) -> dict[str, Any]:
    """The device, its history, and its current findings in full (severity,
    summary, evidence, recommendation, guidance, first/last seen)."""
    view = store.device(device_id, time.time(), settings.device_interval_s)
    if view is None:
        raise HTTPException(404, "no such device")
    view["finding_detail"] = views.finding_detail(store, device_id, store.latest_report(device_id))
    return view


@router.get("/{device_id}/latest", responses={404: {"description": "no report from this device yet"}})
def latest(device_id: str = DevicePath, store: Store = Depends(get_store)) -> dict[str, Any]:
    report = store.latest_report(device_id)
    if report is None:
        raise HTTPException(404, "no report from this device yet")
    return report
