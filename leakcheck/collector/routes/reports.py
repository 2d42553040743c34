"""POST /api/v1/reports: a device submits one report (idempotent on report_id)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from leakcheck.collector.contract import ReportIn, SubmitOut
from leakcheck.collector.deps import device_principal, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import ForeignReport, Principal, Store

router = APIRouter(prefix="/api/v1", tags=["reports"])


@router.post("/reports", response_model=SubmitOut, status_code=201,
             responses={200: {"model": SubmitOut, "description": "already stored; nothing new stored"},
                        401: {"description": "missing, unknown or revoked token"},
                        403: {"description": "the report is for another device"},
                        409: {"description": "report_id belongs to another device"},
                        413: {"description": "body too large"},
                        429: {"description": "rate limited; see Retry-After"}})
def submit(report: ReportIn, request: Request, response: Response,
           who: Principal = Depends(device_principal), store: Store = Depends(get_store),
           settings: Settings = Depends(get_settings)) -> SubmitOut:
    metrics = request.app.state.metrics
    if report.device.id != who.device_id:
        metrics.count("rejected_foreign_device")
        raise HTTPException(403, "a device token can only submit its own device's reports")
    body = report.model_dump_json(by_alias=True, exclude={"agent"} if report.agent is None else None)
    try:
        result = store.submit(report, body, who.device_id, settings.rate_limit, settings.rate_window_s)
    except ForeignReport:
        metrics.count("rejected_foreign_report")
        raise HTTPException(409, "this report_id is stored for another device") from None
    if result.retry_after is not None:
        metrics.count("rate_limited")
        raise HTTPException(429, "too many reports from this device",
                            headers={"Retry-After": str(result.retry_after)})
    metrics.count("stored" if result.stored else "duplicate")
    if not result.stored:
        response.status_code = 200
    return SubmitOut(report_id=report.report_id, stored=result.stored)
