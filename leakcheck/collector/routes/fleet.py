"""Fleet summary for security teams (analyst tokens only)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query

from leakcheck.collector import views
from leakcheck.collector.deps import AUTH_RESPONSES, analyst_principal, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store

router = APIRouter(prefix="/api/v1/fleet", tags=["fleet"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)


@router.get("/summary")
def summary(days: int = Query(30, ge=1, le=366), store: Store = Depends(get_store),
            settings: Settings = Depends(get_settings)) -> dict[str, Any]:
    """Devices per verdict, per current finding id and per OS; reports per day
    and verdict; the slowest tunnel recoveries; stale devices. `leak_classes`
    and `notes` split the current findings by severity (info = note)."""
    summary = store.summary(time.time(), settings.device_interval_s, days)
    classes = views.finding_classes(store)
    summary.update(leak_classes=classes["leaks"], notes=classes["notes"])
    return summary
