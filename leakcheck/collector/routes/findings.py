"""Findings by probe, finding id, device and time range (analyst tokens only)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query

from leakcheck.collector.contract import Time, parse_time
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_store
from leakcheck.collector.store import Store
from leakcheck.report import Contract

router = APIRouter(prefix="/api/v1", tags=["findings"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)

# Time = the RFC 3339 pattern plus a real-date check (0000-00-00 is refused, not a 500).
Since = Annotated[Optional[Time], Query(description="RFC 3339; reports started at or after")]
Until = Annotated[Optional[Time], Query(description="RFC 3339; reports started before")]


def epoch(text: Optional[str]) -> Optional[float]:
    return parse_time(text).timestamp() if text else None


@router.get("/findings")
def list_findings(probe: Optional[str] = Query(None, pattern=Contract.NAME, max_length=Contract.NAME_MAX),
                  finding_id: Optional[str] = Query(None, max_length=Contract.FINDING_ID_MAX,
                                                    pattern=Contract.FINDING_ID),
                  device_id: Optional[str] = Query(None, pattern=Contract.DEVICE_ID),
                  since: Since = None, until: Until = None,
                  limit: int = Query(500, ge=1, le=10_000), offset: int = Query(0, ge=0, le=10_000_000),
                  store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    return store.findings(probe, finding_id, epoch(since), epoch(until), device_id, limit, offset)
