"""The report model: findings, probe results and the report document.

The JSON shape is a public contract (schema `leakcheck.report/1`, see
DESIGN.md); `Report.to_dict` is the only place that builds it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SCHEMA = "leakcheck.report/1"
FINDING_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\.[a-z0-9]+(?:-[a-z0-9]+)*$")


class Severity(str, enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class Effect(str, enum.Enum):
    """What a finding does to its probe's status (not part of the JSON)."""

    LEAK = "leak"
    WARN = "warn"
    INFO = "info"  # reported, but the probe still passes


class Status(str, enum.Enum):
    PASS = "pass"
    LEAK = "leak"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"


class Verdict(str, enum.Enum):
    PASS = "pass"
    LEAK = "leak"
    WARN = "warn"
    ERROR = "error"


# NCSC VPN guidance, summarised in DESIGN.md; findings cite one of these.
class Guidance:
    FULL_TUNNEL = "NCSC VPN guidance: force all traffic through the VPN (full-device, no split tunnelling)"
    RECONNECT = "NCSC VPN guidance: connect automatically and reconnect after loss of connection"
    EXCEPTIONS = ("NCSC VPN guidance: allow traffic outside the tunnel only for explicitly managed "
                  "exceptions (the VPN server itself, named service endpoints, captive-portal helpers)")
    DNS = "NCSC VPN guidance: force all traffic, including DNS, through the VPN"


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    summary: str
    evidence: dict[str, Any]
    recommendation: str
    guidance: str
    effect: Effect = Effect.LEAK

    def __post_init__(self) -> None:
        if not FINDING_ID.match(self.id):
            raise ValueError(f"finding id {self.id!r} is not probe.kebab-case")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "summary": self.summary,
            "evidence": self.evidence,
            "recommendation": self.recommendation,
            "guidance": self.guidance,
        }


@dataclass
class ProbeResult:
    probe: str
    status: Status
    duration_ms: int
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "status": self.status.value,
            "duration_ms": self.duration_ms,
            "findings": [f.to_dict() for f in self.findings],
            "error": self.error,
        }


def status_from_findings(findings: list[Finding]) -> Status:
    effects = {f.effect for f in findings}
    if Effect.LEAK in effects:
        return Status.LEAK
    if Effect.WARN in effects:
        return Status.WARN
    return Status.PASS


def overall_verdict(results: list[ProbeResult]) -> Verdict:
    """leak if any probe leaks, else error, else warn, else pass (DESIGN.md)."""
    statuses = {r.status for r in results}
    for status, verdict in ((Status.LEAK, Verdict.LEAK), (Status.ERROR, Verdict.ERROR),
                            (Status.WARN, Verdict.WARN)):
        if status in statuses:
            return verdict
    return Verdict.PASS


@dataclass
class TunnelSummary:
    state: str  # up | down | absent
    kind: str  # wireguard | ipsec | tun | ppp | other | none
    interfaces: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "kind": self.kind, "interfaces": list(self.interfaces)}


@dataclass
class Report:
    report_id: str
    agent_version: str
    device: dict[str, str]
    started_at: datetime
    finished_at: datetime
    trigger: str
    tunnel: TunnelSummary
    probes: list[ProbeResult]
    # Additive, optional (schema unchanged): the agent's self-health
    # {"spool_depth", "dropped", "last_upload", "last_error"}; emitted only when set.
    agent: dict[str, Any] | None = None

    @property
    def verdict(self) -> Verdict:
        return overall_verdict(self.probes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "report_id": self.report_id,
            "agent_version": self.agent_version,
            "device": dict(self.device),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "trigger": self.trigger,
            "tunnel": self.tunnel.to_dict(),
            "verdict": self.verdict.value,
            "probes": [p.to_dict() for p in self.probes],
            **({"agent": dict(self.agent)} if self.agent is not None else {}),
        }


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
