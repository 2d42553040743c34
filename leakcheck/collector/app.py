"""create_app(settings): the collector as an ASGI application. No globals:
each app owns its engine, store and metrics (tests build as many as they like)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from leakcheck import __version__
from leakcheck.collector.alerts import routes as alert_routes
from leakcheck.collector.alerts.dispatcher import Dispatcher
from leakcheck.collector.alerts.store import AlertStore
from leakcheck.collector.db import make_engine
from leakcheck.collector.deps import refusal
from leakcheck.collector.ingest import Ingest
from leakcheck.collector.limits import BodyLimit
from leakcheck.collector.flowstore import FlowStore
from leakcheck.collector.maintenance import Maintenance
from leakcheck.collector.oidc import OidcClient
from leakcheck.collector.routes import (admin, advisories, conformance, devices, enroll, export, findings, fleet,
                                        flows, flows_web, health, reports, web)
from leakcheck.collector.schema import migrate
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store


def create_app(settings: Settings, *, run_migrations: bool = True) -> FastAPI:
    engine = make_engine(settings.url)
    if run_migrations:
        migrate(engine)
    app = FastAPI(title="leakcheck collector", version=__version__,
                  description="Receives leakcheck.report/1 documents from enrolled devices and "
                              "serves fleet views to analysts.")
    app.state.settings = settings
    app.state.store = Store(engine)
    app.state.flow_store = FlowStore(engine)
    app.state.ingest = Ingest(app.state.store, settings.rate_limit, settings.rate_window_s,
                              daily_bytes=settings.device_daily_bytes)
    if run_migrations:
        app.state.store.ensure_partitions(time.time())
    app.state.maintenance = Maintenance(app.state.store, settings.retention_days, settings.maintenance_interval_s)
    app.state.enroll_failures = enroll.FailureLimit(settings.enroll_failures_per_minute, 60.0)
    app.state.metrics = health.Metrics()
    oidc_settings = settings.oidc()
    app.state.oidc = OidcClient(oidc_settings) if oidc_settings else None
    for module in (enroll, reports, flows, devices, findings, fleet, export, admin, health, conformance, web,
                   advisories, flows_web):
        app.include_router(module.router)
    # Alerts (issue 13): a dispatcher thread per process; one replica at a time
    # holds the database lease and dispatches (leakcheck.collector.alerts).
    app.state.alerts_store = AlertStore(engine)
    app.include_router(alert_routes.router)
    alert_config = settings.alert_config()
    app.state.dispatcher = (Dispatcher(engine, alert_config, settings.device_interval_s)
                            if alert_config.enabled else None)
    if app.state.dispatcher is not None:
        app.router.add_event_handler("startup", app.state.dispatcher.start)
        app.router.add_event_handler("shutdown", app.state.dispatcher.stop)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.method == "POST" and request.url.path in ("/api/v1/reports", "/api/v1/flows"):
            # A bad token is refused as such, whatever the document looks like.
            refused = await run_in_threadpool(refusal, request)
            if refused is not None:
                return JSONResponse({"detail": refused.detail}, status_code=refused.status_code,
                                    headers=refused.headers)
        request.app.state.metrics.count("rejected_invalid")
        # Name the fields, not the values: a rejected document is not echoed back.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()][:20]
        return JSONResponse({"detail": errors}, status_code=422)

    app.router.add_event_handler("startup", app.state.maintenance.start)
    app.router.add_event_handler("shutdown", app.state.maintenance.stop)
    app.router.add_event_handler("shutdown", app.state.ingest.close)
    app.router.add_event_handler("shutdown", engine.dispose)
    # The hot path for well-formed submissions (routes/reports.py), inside the body limit.
    app.add_middleware(reports.FastSubmit)
    # Outermost: an oversize body is refused before routing or parsing.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
