"""The report model: findings, probe results and the report document.

The JSON shape is a public contract (schema `leakcheck.report/1`, see
DESIGN.md); `Report.to_dict` is the only place that builds it.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SCHEMA = "leakcheck.report/1"


class Contract:
    """The limits of `leakcheck.report/1`: the one definition. The agent
    conforms a report to them before spooling (`conform`), the collector's
    request model (leakcheck.collector.contract) is built from them and runs
    `problems` too, so what an agent spools the collector accepts."""

    NAME = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
    FINDING_ID = r"^[a-z0-9]+(?:-[a-z0-9]+)*\.[a-z0-9]+(?:-[a-z0-9]+)*$"
    UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
    HOSTNAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
    INTERFACE = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$"
    VERSION = r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$"
    RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
    TEXT_MAX = 4000
    NAME_MAX = 64
    FINDING_ID_MAX = 128
    PROBES_MAX = 64
    FINDINGS_MAX = 500
    INTERFACES_MAX = 64
    CHECKS_MAX = 32
    DURATION_MS_MAX = 86_400_000
    # Counters land in 32-bit integer columns on PostgreSQL.
    COUNTER_MAX = 2**31 - 1
    # Evidence: JSON only as deep, as large and as exact as both databases
    # and every JSON reader can hold (a 64-bit integer, a finite float).
    EVIDENCE_DEPTH = 16
    EVIDENCE_INT_MAX = 2**63 - 1
    EVIDENCE_BYTES = 32 * 1024  # per finding, as compact JSON
    REPORT_EVIDENCE_BYTES = 128 * 1024  # all findings of one report
    # Years a report's times may name: no clock is right outside these, and
    # years 1 and 9999 overflow when converted to UTC.
    YEAR_MIN = 2000
    YEAR_MAX = 2999
    TRUNCATED = "…[truncated by leakcheck: {n} more characters]"


FINDING_ID = re.compile(Contract.FINDING_ID)


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
    FORCED = ("NCSC VPN guidance: a forced VPN that applications and users cannot evade "
              "(traffic is blocked, not sent in clear, whenever the tunnel is down)")
    AUTOCONNECT = "NCSC VPN guidance: a VPN that connects automatically, before the user can reach the network"
    PROTOCOL = "NCSC VPN guidance: use IPsec (or a TLS VPN where IPsec cannot be used) with the platform's native client"
    AUTHENTICATION = ("NCSC VPN guidance: authenticate with certificates, private keys held in "
                      "hardware (TPM, smart card) where possible")
    CRYPTO_PROFILE = "NCSC VPN guidance: configure the VPN to NCSC's cryptographic profiles for IPsec or TLS"
    UP_TO_DATE = "NCSC VPN guidance: keep VPN clients up to date with security patches"
    CAPTIVE_PORTAL = ("NCSC VPN guidance: use the platform's captive-portal helper, with the exceptions "
                      "it needs kept narrow")


# The recommendations a probe can declare it checks (`Probe.checks`), by a stable key.
# A report's probe result lists them under the optional `checks` field, so the
# collector can tell, for each recommendation, which devices were checked and met it
# without knowing any probe by name.
RECOMMENDATIONS: dict[str, str] = {
    "full-tunnel": Guidance.FULL_TUNNEL,
    "dns": Guidance.DNS,
    "exceptions": Guidance.EXCEPTIONS,
    "reconnect": Guidance.RECONNECT,
    "forced": Guidance.FORCED,
    "autoconnect": Guidance.AUTOCONNECT,
    "protocol": Guidance.PROTOCOL,
    "authentication": Guidance.AUTHENTICATION,
    "crypto-profile": Guidance.CRYPTO_PROFILE,
    "up-to-date": Guidance.UP_TO_DATE,
    "captive-portal": Guidance.CAPTIVE_PORTAL,
}


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
    # Additive, optional (schema unchanged): keys of RECOMMENDATIONS this probe checks;
    # emitted only when the probe declares some.
    checks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "status": self.status.value,
            "duration_ms": self.duration_ms,
            "findings": [f.to_dict() for f in self.findings],
            "error": self.error,
            **({"checks": list(self.checks)} if self.checks else {}),
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
    # {"spool_depth", "dropped", "last_upload", "last_error", "quarantined"}; emitted only when set.
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


# -- the contract's checks, shared by agent and collector ------------------------

def text_problem(value: str) -> str | None:
    """Text both databases store: no NUL (PostgreSQL refuses it), no lone
    surrogates (psutil turns undecodable process names into those)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    return None


def evidence_problem(value: Any, depth: int = 0) -> str | None:
    """Why an evidence value breaks the contract, or None."""
    if depth > Contract.EVIDENCE_DEPTH:
        return f"nested deeper than {Contract.EVIDENCE_DEPTH}"
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if abs(value) <= Contract.EVIDENCE_INT_MAX else "integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "number is not finite"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = (text_problem(key) if isinstance(key, str) else "key is not a string") or \
                evidence_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for item in value:
            problem = evidence_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"{type(value).__name__} is not JSON"


def evidence_size(evidence: Any) -> int:
    return len(json.dumps(evidence, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=True).encode("utf-8", "surrogatepass"))


def time_problem(text: str) -> str | None:
    if not isinstance(text, str) or not re.match(Contract.RFC3339, text):
        return "is not an RFC 3339 time"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return "is not a real date"
    if not Contract.YEAR_MIN <= moment.year <= Contract.YEAR_MAX:
        return f"year outside {Contract.YEAR_MIN}..{Contract.YEAR_MAX}"
    return None


def problems(doc: Any) -> list[str]:
    """What the collector refuses beyond types and patterns: text that is
    not storable, evidence too deep, too large, too exact or not finite.
    Walks the raw document (before any model), bounded by the limits."""
    found: list[str] = []
    if not isinstance(doc, dict):
        return found

    def walk_text(where: str, value: Any) -> None:
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                found.append(f"{where} {problem}")
        elif isinstance(value, dict):
            for key, item in list(value.items())[:1000]:
                walk_text(f"{where}.{key}" if isinstance(key, str) else where, item)
        elif isinstance(value, list):
            for n, item in enumerate(value[:1000]):
                walk_text(f"{where}[{n}]", item)

    for key in ("device", "tunnel", "agent", "agent_version", "report_id"):
        walk_text(key, doc.get(key))
    total = 0
    probes = doc.get("probes")
    for p, probe in enumerate(probes if isinstance(probes, list) else []):
        if not isinstance(probe, dict):
            continue
        walk_text(f"probes[{p}].error", probe.get("error"))
        findings = probe.get("findings")
        for f, finding in enumerate(findings if isinstance(findings, list) else []):
            if not isinstance(finding, dict):
                continue
            where = f"probes[{p}].findings[{f}]"
            for key in ("summary", "recommendation", "guidance"):
                walk_text(f"{where}.{key}", finding.get(key))
            evidence = finding.get("evidence")
            problem = evidence_problem(evidence)
            if problem:
                found.append(f"{where}.evidence {problem}")
                continue
            size = evidence_size(evidence)
            total += size
            if size > Contract.EVIDENCE_BYTES:
                found.append(f"{where}.evidence is over {Contract.EVIDENCE_BYTES} bytes")
    if total > Contract.REPORT_EVIDENCE_BYTES:
        found.append(f"the report's evidence is over {Contract.REPORT_EVIDENCE_BYTES} bytes")
    for key in ("started_at", "finished_at"):
        if key in doc:
            problem = time_problem(doc[key])
            if problem:
                found.append(f"{key} {problem}")
    return found


# -- the agent's side: conform before spooling -------------------------------------

def clean_text(value: str, limit: int | None = Contract.TEXT_MAX) -> str:
    """Storable text within `limit`; what is cut is said, never silent."""
    if text_problem(value):
        # NUL and lone surrogates become U+FFFD: the rest of the text survives.
        value = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        keep = max(0, limit - len(Contract.TRUNCATED.format(n=len(value))))
        value = value[:keep] + Contract.TRUNCATED.format(n=len(value) - keep)
    return value


def clean_evidence(value: Any, depth: int = 0) -> Any:
    """Evidence the contract admits: too deep becomes a marker string, a
    number no database holds becomes its text, text is made storable."""
    if depth >= Contract.EVIDENCE_DEPTH and isinstance(value, (dict, list, tuple)):
        return clean_text(f"[truncated by leakcheck: nested deeper than {Contract.EVIDENCE_DEPTH}] "
                          + _compact(value), 1000)
    if isinstance(value, str):
        return clean_text(value, Contract.TEXT_MAX)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) <= Contract.EVIDENCE_INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {clean_text(str(k), 200): clean_evidence(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_evidence(v, depth + 1) for v in value]
    return clean_text(str(value), Contract.TEXT_MAX)


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=str)[:1000]
    except (ValueError, RecursionError):
        return type(value).__name__


def _fit_evidence(evidence: Any, budget: int) -> Any:
    if evidence_size(evidence) <= budget:
        return evidence
    text = _compact(evidence) if budget > 200 else ""
    return {"truncated_by_leakcheck": f"evidence was over {budget} bytes",
            "start": clean_text(text[:max(0, min(budget - 200, 1000))], None)}


def conform(doc: dict[str, Any]) -> dict[str, Any]:
    """The agent's report made to fit the contract before it is spooled:
    text cut with a marker, evidence cleaned and capped, counters bounded,
    findings over the cap dropped with a note in the probe's error. The
    collector accepts every document this returns (tests/agent/test_contract.py)."""
    out = dict(doc)
    out["device"] = dict(doc.get("device", {}))
    out["device"]["os_version"] = clean_text(str(out["device"].get("os_version", "")))
    budget = Contract.REPORT_EVIDENCE_BYTES
    out["probes"] = []
    for original in doc.get("probes", []):
        probe = dict(original)
        findings = [dict(f) for f in original.get("findings", [])]
        if len(findings) > Contract.FINDINGS_MAX:
            note = (f"[{len(findings) - Contract.FINDINGS_MAX} finding(s) dropped by leakcheck: "
                    f"over {Contract.FINDINGS_MAX}]")
            findings = findings[:Contract.FINDINGS_MAX]
            probe["error"] = note if probe.get("error") is None else f"{probe['error']} {note}"
        if probe.get("error") is not None:
            probe["error"] = clean_text(str(probe["error"]))
        probe["duration_ms"] = min(max(int(probe.get("duration_ms", 0)), 0), Contract.DURATION_MS_MAX)
        for finding in findings:
            for key in ("summary", "recommendation", "guidance"):
                finding[key] = clean_text(str(finding.get(key, "")))
            evidence = _fit_evidence(clean_evidence(finding.get("evidence", {})),
                                     min(Contract.EVIDENCE_BYTES, max(budget, 0)))
            finding["evidence"] = evidence
            budget -= evidence_size(evidence)
        probe["findings"] = findings
        out["probes"].append(probe)
    if isinstance(doc.get("agent"), dict):
        agent = out["agent"] = dict(doc["agent"])
        for key in ("spool_depth", "dropped", "quarantined"):
            if isinstance(agent.get(key), int):
                agent[key] = min(max(agent[key], 0), Contract.COUNTER_MAX)
        if agent.get("last_error") is not None:
            agent["last_error"] = clean_text(str(agent["last_error"]))
    return out
