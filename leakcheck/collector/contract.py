"""Request models: the report contract `leakcheck.report/1`, checked strictly.

Every field of the DESIGN.md contract is required and typed; unknown fields
are refused (a new shape needs a new `schema` value). The one additive,
optional field is `agent` (self-health), see the package docstring.
Identifiers are held to tight patterns; free text (summaries, evidence) is
accepted as data and only ever bound as SQL parameters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, StringConstraints,
                      model_serializer, model_validator)

from leakcheck.report import SCHEMA, Contract, problems, time_problem

RFC3339 = Contract.RFC3339


def _parse_time(text: str) -> str:
    # The pattern admits 2024-13-45 and year 1; the contract refuses both.
    problem = time_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def _pattern(regex: str, max_length: int | None = None) -> Any:
    return Annotated[str, StringConstraints(pattern=regex, max_length=max_length)]


Time = Annotated[str, StringConstraints(pattern=RFC3339, max_length=40), AfterValidator(_parse_time)]
Text = Annotated[str, StringConstraints(max_length=Contract.TEXT_MAX)]
Name = _pattern(Contract.NAME, Contract.NAME_MAX)
FindingId = _pattern(Contract.FINDING_ID, Contract.FINDING_ID_MAX)
Uuid = _pattern(Contract.UUID)
DeviceId = _pattern(Contract.DEVICE_ID)
Hostname = _pattern(Contract.HOSTNAME)
Interface = _pattern(Contract.INTERFACE)
Version = _pattern(Contract.VERSION)
Counter = Annotated[int, Field(ge=0, le=Contract.COUNTER_MAX)]

Status = Literal["pass", "leak", "warn", "skip", "error"]
Verdict = Literal["pass", "leak", "warn", "error"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DeviceIn(Strict):
    id: DeviceId
    hostname: Hostname
    os: Name
    os_version: Text


class TunnelIn(Strict):
    state: Literal["up", "down", "absent"]
    kind: Literal["wireguard", "ipsec", "tun", "ppp", "other", "none"]
    interfaces: list[Interface] = Field(max_length=Contract.INTERFACES_MAX)


class FindingIn(Strict):
    id: FindingId
    severity: Literal["critical", "high", "medium", "low", "info"]
    summary: Text
    evidence: dict[str, Any]
    recommendation: Text
    guidance: Text


class ProbeIn(Strict):
    probe: Name
    status: Status
    duration_ms: int = Field(ge=0, le=Contract.DURATION_MS_MAX)
    findings: list[FindingIn] = Field(max_length=Contract.FINDINGS_MAX)
    error: Optional[Text]
    # Optional (added within report/1): recommendation keys the probe checks. Keys this
    # collector does not know are kept (a newer agent may know more).
    checks: list[Name] = Field(default_factory=list, max_length=Contract.CHECKS_MAX)

    @model_serializer(mode="wrap")
    def _stored_as_sent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An optional field stays absent when the agent did not send it, so the
        stored report reads back as the agent's own document."""
        out = handler(self)
        if not out.get("checks"):
            out.pop("checks", None)
        return out


class AgentHealth(Strict):
    spool_depth: Counter
    dropped: Counter
    last_upload: Optional[Time]
    last_error: Optional[Text]
    # Reports the agent set aside after the collector kept failing on them.
    quarantined: Optional[Counter] = None


def expected_verdict(statuses: set[str]) -> str:
    """DESIGN.md: leak if any probe leaks, else error, else warn, else pass."""
    for status in ("leak", "error", "warn"):
        if status in statuses:
            return status
    return "pass"


class ReportIn(Strict):
    schema_: Literal["leakcheck.report/1"] = Field(alias="schema")
    report_id: Uuid
    agent_version: Version
    device: DeviceIn
    started_at: Time
    finished_at: Time
    trigger: Literal["manual", "schedule", "network-change"]
    tunnel: TunnelIn
    verdict: Verdict
    probes: list[ProbeIn] = Field(max_length=Contract.PROBES_MAX)
    agent: Optional[AgentHealth] = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # Text and evidence every database stores (leakcheck.report.problems).
        found = problems(data)
        if found:
            raise ValueError("; ".join(found[:5]))
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "ReportIn":
        if self.verdict != expected_verdict({p.status for p in self.probes}):
            raise ValueError("verdict does not follow from the probe statuses")
        if parse_time(self.finished_at) < parse_time(self.started_at):
            raise ValueError("finished_at is before started_at")
        return self


assert SCHEMA == "leakcheck.report/1"  # this module checks exactly that version


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class EnrollIn(Strict):
    secret: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    device: DeviceIn
    # Random per-installation value: tells a re-enrolling clone from its original.
    instance: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]


class EnrollOut(BaseModel):
    device_id: str
    token: str


class SubmitOut(BaseModel):
    report_id: str
    stored: bool  # false = a resubmission; nothing new was stored


# -- leakcheck.flows/1 (leakcheck/flows.py): the agent's live watch ------------------

from leakcheck import flows as flows_contract  # noqa: E402
from leakcheck.flows import FlowsContract  # noqa: E402

Port = Annotated[int, Field(ge=0, le=FlowsContract.PORT_MAX)]
SystemId = Annotated[int, Field(ge=0, le=FlowsContract.ID_MAX)]
Address = Annotated[str, StringConstraints(max_length=64)]
FlowText = Annotated[str, StringConstraints(max_length=FlowsContract.FLOW_TEXT_MAX)]


def _max_text(n: int) -> Any:
    return Annotated[str, StringConstraints(max_length=n)]


class FlowEvidenceIn(BaseModel):
    """The watch's evidence keys, typed. Further keys (a newer agent's) are
    kept as data, bounded by the evidence checks (flows.problems)."""

    model_config = ConfigDict(extra="allow", strict=True)

    proto: _pattern(FlowsContract.PROTO)
    src: Address
    sport: Optional[Port]
    dst: Address
    dport: Optional[Port]
    interface: Optional[Interface]
    uid: Optional[SystemId]
    gid: Optional[SystemId]
    pid: Optional[SystemId]
    command: Optional[_max_text(FlowsContract.COMMAND_MAX)]
    exe: Optional[_max_text(FlowsContract.PATH_MAX)]
    cgroup: Optional[_max_text(FlowsContract.PATH_MAX)]
    dns_name: Optional[_max_text(FlowsContract.DNS_NAME_MAX)]
    first_seen: Time
    last_seen: Time
    count: Annotated[int, Field(ge=1, le=Contract.COUNTER_MAX)]


class FlowIn(Strict):
    id: Literal["watch.flow-outside-tunnel", "watch.flow-predates-tunnel", "watch.dns-outside-tunnel"]
    severity: Literal["critical", "high", "medium", "low", "info"]
    summary: FlowText
    evidence: FlowEvidenceIn
    recommendation: FlowText
    guidance: FlowText


assert set(FlowIn.model_fields["id"].annotation.__args__) == set(flows_contract.FINDING_IDS)


class FlowsIn(Strict):
    schema_: Literal["leakcheck.flows/1"] = Field(alias="schema")
    batch_id: Uuid
    agent_version: Version
    device: DeviceIn
    sent_at: Time
    flows: list[FlowIn] = Field(max_length=FlowsContract.FLOWS_MAX)

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        found = flows_contract.problems(data)
        if found:
            raise ValueError("; ".join(found[:5]))
        return data


class FlowsOut(BaseModel):
    batch_id: str
    stored: bool  # false = a resubmission; nothing new was stored
