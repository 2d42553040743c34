"""Events, and how a device's change becomes events.

Every event has the same envelope (`make`): `id` (a UUID; receivers dedupe
on it, delivery being at-least-once), `type`, `time` (RFC 3339 UTC, when
the collector noticed), `device` ({id, hostname, os}), `severity`,
`summary` (one sentence), `details` (per type, below) and, for leak
events, `ocsf` (OCSF Detection/Compliance Findings, see ocsf.py).

| type                          | fires when                                    | details |
|-------------------------------|-----------------------------------------------|---------|
| device-starts-leaking         | a leak finding appears in the latest report   | report_id, report_started_at, finding_ids (new), findings (full: evidence, recommendation, guidance), leaking (all) |
| leak-resolved                 | a notified leak finding is gone               | report_id, report_started_at, finding_ids (gone), leaking (still) |
| device-stale                  | no report for `stale_intervals` agent intervals | last_report_at, stale_after_s |
| reconnect-slower-than-bound   | the reconnect probe measured more than the bound (again after a measurement within it) | report_id, reconnect_s, bound_s |
| clone-attempt                 | an enrollment for a held device id was refused (clone_events) | reason (clone / unapproved), hostname, instance |

A leak finding is a finding (not severity info) of a probe whose status
is `leak`, in the device's latest report.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from leakcheck.collector.alerts import ocsf

LEAK_STARTED = "device-starts-leaking"
LEAK_RESOLVED = "leak-resolved"
STALE = "device-stale"
RECONNECT_SLOW = "reconnect-slower-than-bound"
CLONE = "clone-attempt"
TYPES = (LEAK_STARTED, LEAK_RESOLVED, STALE, RECONNECT_SLOW, CLONE)
_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
# Clone events are read from a table that may be re-read (see store.py):
# their event ids derive from the row id so a second read is recognised.
_CLONE_NS = uuid.UUID("6d1f3f2e-6c34-4b8e-9a57-3c1f4e0b7a11")


@dataclass(frozen=True)
class Device:
    """A device as the poll read it from the devices table."""
    device_id: str
    hostname: str
    os: str
    report_id: str | None
    verdict: str | None
    started_at: float | None
    reconnect_s: float | None

    def envelope(self) -> dict[str, str]:
        return {"id": self.device_id, "hostname": self.hostname, "os": self.os}


@dataclass
class Notified:
    """What was last notified about a device (a row of alert_state)."""
    report_id: str | None = None
    leaking: list[str] = field(default_factory=list)
    stale: bool = False
    slow: bool = False


@dataclass(frozen=True)
class Bounds:
    reconnect_s: float
    stale_after_s: float


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make(kind: str, at: float, device: dict[str, str], severity: str, summary: str,
         details: dict[str, Any], event_id: str | None = None,
         ocsf_block: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    event = {"id": event_id or str(uuid.uuid4()), "type": kind, "time": iso(at), "device": device,
             "severity": severity, "summary": summary, "details": details}
    if ocsf_block:
        event["ocsf"] = ocsf_block
    return event


def leak_findings(report: dict[str, Any] | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(probe result, finding) for each leak finding of a stored report."""
    if not report:
        return []
    return [(p, f) for p in report.get("probes", []) if p.get("status") == "leak"
            for f in p.get("findings", []) if f.get("severity") != "info"]


def changes(device: Device, before: Notified | None, report: dict[str, Any] | None, bounds: Bounds,
            at: float) -> tuple[list[dict[str, Any]], Notified]:
    """The events a newly examined latest report causes, and the state to remember.

    `report` is the latest report's document when the device's verdict is
    leak (the only case whose findings matter here), else None. A device
    seen for the first time counts as having notified nothing: if it leaks
    on arrival, that is news."""
    before = before or Notified()
    after = Notified(report_id=device.report_id, leaking=list(before.leaking), stale=before.stale,
                     slow=before.slow)
    events: list[dict[str, Any]] = []
    if device.started_at is not None and at - device.started_at <= bounds.stale_after_s:
        after.stale = False  # it reports again: a later silence is news again
    if device.report_id == before.report_id:
        return events, after
    if device.verdict == "leak" and report is None:
        # A leaking report whose document is not stored (say, kept only as a
        # heartbeat of unchanged findings): its findings are unknown, so the
        # leak notified stays as it is; never a false "resolved".
        pass
    else:
        events += _leak_changes(device, before, report, after, at)
    if device.reconnect_s is not None:
        slow = device.reconnect_s > bounds.reconnect_s
        if slow and not before.slow:
            events.append(make(RECONNECT_SLOW, at, device.envelope(), "medium",
                               f"{device.hostname}'s tunnel took {device.reconnect_s:.1f} s to come back "
                               f"(bound {bounds.reconnect_s:g} s)",
                               {"report_id": device.report_id, "reconnect_s": device.reconnect_s,
                                "bound_s": bounds.reconnect_s}))
        after.slow = slow
    return events, after


def _leak_changes(device: Device, before: Notified, report: dict[str, Any] | None, after: Notified,
                  at: float) -> list[dict[str, Any]]:
    found = leak_findings(report) if device.verdict == "leak" else []
    now_ids = sorted({f["id"] for _, f in found})
    new = [fid for fid in now_ids if fid not in before.leaking]
    gone = [fid for fid in before.leaking if fid not in now_ids]
    base = {"report_id": device.report_id,
            "report_started_at": iso(device.started_at) if device.started_at is not None else None}
    out = []
    if new:
        out.append(_started(device, found, new, now_ids, base, at))
    if gone:
        out.append(make(LEAK_RESOLVED, at, device.envelope(), "info",
                        f"{device.hostname} no longer leaks: {', '.join(gone)}",
                        {**base, "finding_ids": gone, "leaking": now_ids},
                        ocsf_block=[_closed(device, fid, at) for fid in gone]))
    after.leaking = now_ids
    return out


def _started(device: Device, found: list[tuple[dict[str, Any], dict[str, Any]]], new: list[str],
             now_ids: list[str], base: dict[str, Any], at: float) -> dict[str, Any]:
    fresh = [(p, f) for p, f in found if f["id"] in new]
    detail = [{"id": f["id"], "probe": p.get("probe"), "severity": f.get("severity"), "summary": f.get("summary"),
               "evidence": f.get("evidence"), "recommendation": f.get("recommendation"),
               "guidance": f.get("guidance")} for p, f in fresh]
    severity = max((f.get("severity", "info") for _, f in fresh), key=lambda s: _RANK.get(s, 0))
    event = make(LEAK_STARTED, at, device.envelope(), severity,
                 f"{device.hostname} leaks: {', '.join(new)}",
                 {**base, "finding_ids": new, "findings": detail, "leaking": now_ids})
    event["ocsf"] = [ocsf.finding(device.envelope(), p, f, int(at * 1000), "open", uid=event["id"],
                                  report_id=device.report_id) for p, f in fresh]
    return event


def _closed(device: Device, finding_id: str, at: float) -> dict[str, Any]:
    probe = {"probe": finding_id.split(".", 1)[0], "status": "leak"}
    return ocsf.finding(device.envelope(), probe, {"id": finding_id, "severity": "info",
                                                   "summary": f"{finding_id} resolved"},
                        int(at * 1000), "close", report_id=device.report_id)


def stale(device: Device, at: float, bounds: Bounds) -> dict[str, Any]:
    last = iso(device.started_at) if device.started_at is not None else None
    return make(STALE, at, device.envelope(), "medium",
                f"{device.hostname} has not reported since {last}",
                {"last_report_at": last, "stale_after_s": bounds.stale_after_s})


def clone(row_id: int, device: dict[str, str], reason: str, hostname: str, instance: str,
          seen_at: float) -> dict[str, Any]:
    return make(CLONE, seen_at, device, "high",
                f"an enrollment as {device['id']} was refused ({reason}) from a host calling itself {hostname}",
                {"reason": reason, "hostname": hostname, "instance": instance},
                event_id=str(uuid.uuid5(_CLONE_NS, str(row_id))))
