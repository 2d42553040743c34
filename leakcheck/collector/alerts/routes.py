"""Alert events and the webhook/SIEM delivery log over the API.

Both lists are cursor-paginated: pass the answer's `next` back as
`after` (events, oldest first) or `before` (deliveries, newest first).
Events are a fleet view (analyst or admin token); the delivery log, which
names the webhook and SIEM destinations, is an administrator's view
(admin token).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, Query, Request

from leakcheck.collector.alerts.events import TYPES
from leakcheck.collector.alerts.store import AlertStore
from leakcheck.collector.deps import ADMIN_RESPONSES, AUTH_RESPONSES, admin_principal, analyst_principal

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], dependencies=[Depends(analyst_principal)],
                   responses=AUTH_RESPONSES)
EventType = Literal[TYPES]  # type: ignore[valid-type]


def get_alerts(request: Request) -> AlertStore:
    return request.app.state.alerts_store


@router.get("/events")
def list_events(after: int = Query(0, ge=0, le=2**62, description="the `next` of the previous page"),
                limit: int = Query(100, ge=1, le=1000), type: Optional[EventType] = Query(None),
                alerts: AlertStore = Depends(get_alerts)) -> dict[str, Any]:
    """State-change events in the order they were detected (each with its `seq`)."""
    found = alerts.events(after, limit, type)
    return {"events": found, "next": found[-1]["seq"] if len(found) == limit else None}


@router.get("/deliveries", dependencies=[Depends(admin_principal)], responses=ADMIN_RESPONSES)
def list_deliveries(before: Optional[int] = Query(None, ge=1, le=2**62, description="the `next` of the previous page"),
                    limit: int = Query(100, ge=1, le=1000),
                    sink: Optional[str] = Query(None, max_length=200),
                    alerts: AlertStore = Depends(get_alerts)) -> dict[str, Any]:
    """Every delivery attempt (sink, events, outcome, HTTP status, error), newest
    first, and how many events each sink has not yet received (`backlog`)."""
    found = alerts.deliveries(before, limit, sink)
    return {"deliveries": found, "backlog": alerts.backlog(),
            "next": found[-1]["id"] if len(found) == limit else None}
