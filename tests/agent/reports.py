"""Synthetic reports built with the real Report model (no network needed)."""

from __future__ import annotations

import uuid

from leakcheck import __version__, device
from leakcheck.report import ProbeResult, Report, Status, TunnelSummary, utcnow


def synthetic(trigger: str = "manual") -> Report:
    started = utcnow()
    return Report(report_id=str(uuid.uuid4()), agent_version=__version__, device=device.describe(),
                  started_at=started, finished_at=utcnow(), trigger=trigger,
                  tunnel=TunnelSummary("up", "wireguard", ["wg0"]),
                  probes=[ProbeResult("routes", Status.PASS, 3)])
