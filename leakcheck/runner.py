"""Runs probes: in a safe order, each under a deadline, each failure contained.

Order: every non-disruptive probe (built-in or plugin) runs before any
disruptive one, whatever their list position: a probe that cuts the tunnel
must not change what the others see. Within each group the given order
holds.

Deadline: each probe has `timeout_s` (its class attribute; Probe's default
is 10 s). A probe still running then is reported as `error` ("did not
finish within N s") and the run goes on; its thread is abandoned (Python
cannot stop a thread), its result discarded. The whole run stays within
RUN_BUDGET_S: a deadline never reaches past what is left of it, and a probe
that finds nothing left is not started.

A probe that raises becomes `error` with the exception's summary; one that
returns something other than a list of findings too. The others still run
and report their findings.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Sequence

from leakcheck.errors import ProbeSkipped
from leakcheck.probe import Probe, ProbeContext
from leakcheck.report import Effect, Finding, ProbeResult, Severity, Status, status_from_findings

log = logging.getLogger(__name__)

# Under the agent's 600 s kill of a check (leakcheck/agent/service.py RUN_TIMEOUT_S), so a
# run that hits every deadline still ends with a report instead of being killed without one.
RUN_BUDGET_S = 580.0
DEFAULT_DEADLINE_S = Probe.timeout_s
MAX_ERROR_CHARS = 500  # the report contract bounds free text; an exception message is not


def skipped(probe: type[Probe], reason: str, duration_ms: int = 0) -> ProbeResult:
    """`skip` always carries its reason, as an info finding `<probe>.skipped`."""
    note = Finding(id=f"{probe.name}.skipped", severity=Severity.INFO, summary=f"Skipped: {reason}.",
                   evidence={"reason": reason}, recommendation="", guidance="", effect=Effect.INFO)
    return ProbeResult(probe=probe.name, status=Status.SKIP, duration_ms=duration_ms, findings=[note])


def failed(probe: type[Probe], message: str, duration_ms: int = 0) -> ProbeResult:
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS - 1] + "…"
    return ProbeResult(probe=probe.name, status=Status.ERROR, duration_ms=duration_ms, error=message)


def gate(probe: type[Probe], ctx: ProbeContext) -> str | None:
    """Why a probe must not run here, or None."""
    if probe.disruptive and not ctx.disruptive and not probe.passive_half:
        return "disruptive test not enabled (agent.disruptive = true or --disruptive)"
    if probe.needs_root and not ctx.is_root:
        return "not privileged (needs root, or CAP_NET_ADMIN and CAP_NET_RAW)"
    return None


def deadline_of(probe: type[Probe]) -> float:
    """The probe's own limit in seconds; a missing or nonsensical value gets the default."""
    value = getattr(probe, "timeout_s", None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return DEFAULT_DEADLINE_S
    return float(value)


def ordered(probes: Sequence[type[Probe]]) -> list[type[Probe]]:
    """Non-disruptive probes first, then disruptive ones; list order within each (a stable sort)."""
    return sorted(probes, key=lambda p: bool(p.disruptive))


def seconds(value: float) -> str:
    return f"{round(value, 2):g}"


def run_one(probe_cls: type[Probe], ctx: ProbeContext, deadline_s: float | None = None,
            clipped_by: str = "") -> ProbeResult:
    """One probe under its deadline (or `deadline_s`, when the run's budget cut it:
    `clipped_by` then says so in the error). Whatever the outcome, the result names
    the recommendations the probe checks."""
    result = _run_one(probe_cls, ctx, deadline_s, clipped_by)
    result.checks = tuple(probe_cls.checks)
    return result


def _run_one(probe_cls: type[Probe], ctx: ProbeContext, deadline_s: float | None,
             clipped_by: str) -> ProbeResult:
    reason = gate(probe_cls, ctx)
    if reason:
        return skipped(probe_cls, reason)
    limit = deadline_of(probe_cls) if deadline_s is None else deadline_s
    outcome: dict[str, Any] = {}

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
    worker.join(limit)
    elapsed = int((time.monotonic() - started) * 1000)
    if worker.is_alive():
        log.warning("probe %s did not finish within %s s; abandoned", probe_cls.name, seconds(limit))
        return failed(probe_cls, f"did not finish within {seconds(limit)} s{clipped_by}", elapsed)
    if "skip" in outcome:
        return skipped(probe_cls, str(outcome["skip"]), elapsed)
    if "error" in outcome:
        return failed(probe_cls, str(outcome["error"]), elapsed)
    findings = outcome.get("findings")
    if not isinstance(findings, list) or not all(isinstance(f, Finding) for f in findings):
        kinds = sorted({type(f).__name__ for f in findings}) if isinstance(findings, list) else []
        what = f"a list holding {', '.join(kinds)}" if kinds else type(findings).__name__
        return failed(probe_cls, f"returned {what}, not a list of findings", elapsed)
    return ProbeResult(probe=probe_cls.name, status=status_from_findings(findings),
                       duration_ms=elapsed, findings=findings)


def run_all(probes: Sequence[type[Probe]], ctx: ProbeContext,
            budget_s: float = RUN_BUDGET_S) -> list[ProbeResult]:
    """Results in the order the probes ran (see `ordered`)."""
    results = []
    ends_at = time.monotonic() + budget_s
    for probe in ordered(probes):
        left = ends_at - time.monotonic()
        own = deadline_of(probe)
        if gate(probe, ctx) is None and left <= 0:
            results.append(failed(probe, f"not started: the run's {seconds(budget_s)} s time budget was spent"))
            continue
        clipped = f" (what was left of the run's {seconds(budget_s)} s time budget)" if left < own else ""
        results.append(run_one(probe, ctx, min(own, left), clipped))
    return results
