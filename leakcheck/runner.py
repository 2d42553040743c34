"""Runs probes: each under a time limit, each failure contained.

A probe that raises becomes `status: error` with the message; one that runs
past its limit becomes `error` too, and the run goes on without it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

from leakcheck.errors import ProbeSkipped
from leakcheck.probe import Probe, ProbeContext
from leakcheck.report import Effect, Finding, ProbeResult, Severity, Status, status_from_findings

log = logging.getLogger(__name__)


def skipped(probe: type[Probe], reason: str, duration_ms: int = 0) -> ProbeResult:
    """`skip` always carries its reason, as an info finding `<probe>.skipped`."""
    note = Finding(id=f"{probe.name}.skipped", severity=Severity.INFO, summary=f"Skipped: {reason}.",
                   evidence={"reason": reason}, recommendation="", guidance="", effect=Effect.INFO)
    return ProbeResult(probe=probe.name, status=Status.SKIP, duration_ms=duration_ms, findings=[note])


def gate(probe: type[Probe], ctx: ProbeContext) -> str | None:
    """Why a probe must not run here, or None."""
    if probe.disruptive and not ctx.disruptive:
        return "disruptive test not enabled (agent.disruptive = true or --disruptive)"
    if probe.needs_root and not ctx.is_root:
        return "not privileged (needs root, or CAP_NET_ADMIN and CAP_NET_RAW)"
    return None


def run_one(probe_cls: type[Probe], ctx: ProbeContext) -> ProbeResult:
    reason = gate(probe_cls, ctx)
    if reason:
        return skipped(probe_cls, reason)
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["findings"] = probe_cls().run(ctx)
        except ProbeSkipped as exc:
            outcome["skip"] = exc.reason
        except Exception as exc:  # contained: one probe never sinks the run
            log.debug("probe %s failed", probe_cls.name, exc_info=True)
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    started = time.monotonic()
    worker = threading.Thread(target=target, name=f"probe-{probe_cls.name}", daemon=True)
    worker.start()
    worker.join(probe_cls.timeout_s)
    elapsed = int((time.monotonic() - started) * 1000)
    if worker.is_alive():
        return ProbeResult(probe=probe_cls.name, status=Status.ERROR, duration_ms=elapsed,
                           error=f"timed out after {probe_cls.timeout_s:g} s")
    if "skip" in outcome:
        return skipped(probe_cls, str(outcome["skip"]), elapsed)
    if "error" in outcome:
        return ProbeResult(probe=probe_cls.name, status=Status.ERROR, duration_ms=elapsed,
                           error=str(outcome["error"]))
    findings = list(outcome.get("findings") or [])
    return ProbeResult(probe=probe_cls.name, status=status_from_findings(findings),
                       duration_ms=elapsed, findings=findings)


def run_all(probes: Sequence[type[Probe]], ctx: ProbeContext) -> list[ProbeResult]:
    return [run_one(p, ctx) for p in probes]
