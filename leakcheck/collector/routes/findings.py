"""Findings by probe, finding id, device, OS, tunnel kind and time range
(analyst tokens only), and the devices that have a finding now."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from leakcheck.collector import views
from leakcheck.collector.contract import Time, parse_time
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_settings, get_store
from leakcheck.collector.routes.paging import Cursor, bad_cursor, paged
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1", tags=["findings"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)

# Time = the RFC 3339 pattern plus a real-date check (0000-00-00 is refused, not a 500).
Since = Annotated[Optional[Time], Query(description="RFC 3339; reports started at or after")]
Until = Annotated[Optional[Time], Query(description="RFC 3339; reports started before")]


def epoch(text: Optional[str]) -> Optional[float]:
    return parse_time(text).timestamp() if text else None


def finding_filter(probe: Optional[str] = Query(None, pattern=Contract.NAME, max_length=Contract.NAME_MAX),
                   finding_id: Optional[str] = Query(None, max_length=Contract.FINDING_ID_MAX,
                                                     pattern=Contract.FINDING_ID),
                   device_id: Optional[str] = Query(None, pattern=Contract.DEVICE_ID),
                   os: Optional[str] = Query(None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
                   tunnel_kind: Optional[str] = Query(None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
                   notes: bool = Query(True, description="include info-severity notes"),
                   since: Since = None, until: Until = None) -> views.FindingFilter:
    return views.FindingFilter(probe=probe, finding_id=finding_id, device_id=device_id, since=epoch(since),
                               until=epoch(until), os=os, tunnel_kind=tunnel_kind, notes=notes)


@router.get("/findings", responses={400: {"description": "bad cursor"}})
def list_findings(request: Request, response: Response,
                  limit: int = Query(500, ge=1, le=10_000), cursor: Cursor = None,
                  where: views.FindingFilter = Depends(finding_filter),
                  store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    """Newest first, a page at a time: follow `Link: rel="next"`."""
    try:
        page = views.finding_page(store, limit, cursor, where)
    except views.BadCursor as exc:
        raise bad_cursor(exc) from None
    return paged(request, response, page)


@router.get("/findings/{finding_id}/devices", responses={400: {"description": "bad cursor"}})
def devices_with(request: Request, response: Response,
                 finding_id: str = Path(max_length=Contract.FINDING_ID_MAX, pattern=Contract.FINDING_ID),
                 limit: int = Query(100, ge=1, le=1000), cursor: Cursor = None,
                 store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
                 ) -> list[dict[str, Any]]:
    """The devices whose latest report carries this finding."""
    try:
        page = views.finding_devices(store, finding_id, time.time(), settings.device_interval_s, limit, cursor)
    except views.BadCursor as exc:
        raise bad_cursor(exc) from None
    return paged(request, response, page)
