"""Liveness/readiness and Prometheus metrics (no token: they reveal no device data)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from leakcheck.collector.deps import get_store
from leakcheck.collector.store import Store

router = APIRouter(tags=["health"])


class Metrics:
    """Per-replica request counters; Prometheus sums them across replicas."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] = self._counts.get(outcome, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@router.get("/healthz", responses={503: {"description": "the database cannot be read or written"}})
def health(store: Store = Depends(get_store)) -> Any:
    """Ready only if a write commits: a collector on a full disk or a
    read-only database would otherwise say ok and then fail every report."""
    try:
        store.check_writable()
    except Exception as exc:  # any database failure means "not ready"
        return JSONResponse({"status": "error", "error": type(exc).__name__}, status_code=503)
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, store: Store = Depends(get_store)) -> str:
    lines = ["# HELP leakcheck_submissions_total Report submissions handled by this replica, by outcome.",
             "# TYPE leakcheck_submissions_total counter"]
    for outcome, n in sorted(request.app.state.metrics.snapshot().items()):
        lines.append(f'leakcheck_submissions_total{{outcome="{outcome}"}} {n}')
    for name, value in store.counts().items():
        lines += [f"# TYPE leakcheck_{name} gauge", f"leakcheck_{name} {value}"]
    return "\n".join(lines) + "\n"
