"""The flow record of the live watch: one finding per (process, destination,
port, protocol), shared with the agent's delivery and the fleet views.

A record is a finding of the report contract (id, severity, summary,
evidence, recommendation, guidance), with these evidence keys, always all
present (None where unknown):

    proto, src, sport, dst, dport, interface, uid, gid, pid, command, exe,
    cgroup, dns_name (None unless DNS), first_seen, last_seen (RFC 3339 UTC),
    count

Ids: `watch.flow-outside-tunnel` (a new connection left a physical
interface outside the tunnel), `watch.dns-outside-tunnel` (the same, for a
DNS query: dns_name is the question), `watch.flow-predates-tunnel` (a
connection opened outside the tunnel and still alive after it came up).
Severity is always high. The dedup key is (exe or command, dst, dport,
proto), per finding id: later packets of the same key raise `count` and
`last_seen`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from leakcheck.errors import ExitCode, LeakcheckError
from leakcheck.report import Finding, Guidance, Severity

FLOW_OUTSIDE = "watch.flow-outside-tunnel"
DNS_OUTSIDE = "watch.dns-outside-tunnel"
FLOW_PREDATES = "watch.flow-predates-tunnel"
FINDING_IDS = (FLOW_OUTSIDE, DNS_OUTSIDE, FLOW_PREDATES)
EVIDENCE_KEYS = ("proto", "src", "sport", "dst", "dport", "interface", "uid", "gid", "pid", "command", "exe",
                 "cgroup", "dns_name", "first_seen", "last_seen", "count")

RECOMMENDATIONS = {
    FLOW_OUTSIDE: ("Find why this process's traffic avoids the tunnel (a socket bound to the interface, a "
                   "policy rule by user, mark or cgroup, a route) and remove the bypass, or add the "
                   "destination to policy.allowed_direct if it is a managed exception."),
    DNS_OUTSIDE: ("Make this process resolve through the VPN's resolver: remove the per-app or per-link "
                  "resolver outside the tunnel, or the bypass that carries its queries out."),
    FLOW_PREDATES: ("Restart the application (or drop its connections) after the tunnel comes up, and make "
                    "the VPN block traffic outside the tunnel until it is up (a kill switch) so no connection "
                    "is opened outside it."),
}
GUIDANCE = {FLOW_OUTSIDE: Guidance.FULL_TUNNEL, DNS_OUTSIDE: Guidance.DNS, FLOW_PREDATES: Guidance.FORCED}


# ---- what a platform's kernel watch hands the engine (leakcheck/platform: Backend.watch_kernel)

@dataclass(frozen=True)
class Owner:
    pid: int | None = None
    command: str | None = None
    exe: str | None = None
    cgroup: str | None = None
    uid: int | None = None  # the socket's owner (sock_diag), when NFLOG had none


@dataclass(frozen=True)
class WatchSets:
    """What the filter lets pass silently, besides loopback and ct state != new."""

    tunnels: tuple[str, ...] = ()  # interface names
    direct4: tuple[str, ...] = ()  # prefixes: not public, LANs, VPN servers, allowed exceptions
    direct6: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuspectFlow:
    """One logged packet, or one conntrack flow, with who sent it."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    interface: str | None
    uid: int | None
    gid: int | None
    owner: Owner = field(default_factory=Owner)
    dns_name: str | None = None
    forwarded: bool = False
    predates_tunnel: bool = False


def collapse(prefixes: Iterable[str], version: int) -> tuple[str, ...]:
    """Non-overlapping prefixes of one family: interval sets refuse overlaps."""
    nets = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    return tuple(str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == version))



class WatchUnavailable(LeakcheckError):
    """The watch cannot run here (no CAP_NET_ADMIN, no nftables, unsupported
    platform...): one line, exit 3 (could not complete)."""

    exit_code = ExitCode.PROBE_ERROR


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FlowRecord:
    id: str
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    interface: str | None
    uid: int | None
    gid: int | None
    pid: int | None
    command: str | None
    exe: str | None
    cgroup: str | None
    dns_name: str | None
    first_seen: float  # unix time
    last_seen: float
    count: int = 1
    forwarded: bool = False  # routed for another device (tethering): no local process
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return dedup_key(self.exe or self.command, self.dst, self.dport, self.proto)

    @property
    def table_key(self) -> tuple:
        """The dedup key within one finding id: a connection that leaked when it
        opened and still lives after the tunnel came up is reported under both."""
        return (self.id, *self.key)

    def who(self) -> str:
        if self.forwarded:
            return "a forwarded client (tethering or a bridge)"
        if self.pid is not None:
            return f"{self.command or '?'} (pid {self.pid}, uid {self.uid})"
        if self.uid is not None:
            return f"a process of uid {self.uid} (already gone)"
        return "an unknown sender (no socket: kernel or already gone)"

    def summary(self) -> str:
        where = f"out of {self.interface or '?'}"
        if self.id == DNS_OUTSIDE:
            return (f"{self.who()} asked {self.dst} for {self.dns_name or '?'} {where}, outside the tunnel")
        if self.id == FLOW_PREDATES:
            return (f"{self.who()} keeps a {self.proto} connection to {self.dst}:{self.dport} over "
                    f"{self.interface or '?'} that was opened outside the tunnel and survives it")
        return f"{self.who()} sent {self.proto} to {self.dst}:{self.dport} {where}, outside the tunnel"

    def evidence(self) -> dict[str, Any]:
        return {"proto": self.proto, "src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport,
                "interface": self.interface, "uid": self.uid, "gid": self.gid, "pid": self.pid,
                "command": self.command, "exe": self.exe, "cgroup": self.cgroup, "dns_name": self.dns_name,
                "first_seen": rfc3339(self.first_seen), "last_seen": rfc3339(self.last_seen),
                "count": self.count}

    def finding(self) -> Finding:
        return Finding(id=self.id, severity=Severity.HIGH, summary=self.summary(), evidence=self.evidence(),
                       recommendation=RECOMMENDATIONS[self.id], guidance=GUIDANCE[self.id])

    def to_dict(self) -> dict[str, Any]:
        return self.finding().to_dict()


def dedup_key(process: str | None, dst: str, dport: int, proto: str) -> tuple:
    return (process, dst, dport, proto)


class FlowTable:
    """Records by dedup key. `observe` returns (record, first)."""

    def __init__(self, max_records: int = 10_000) -> None:
        self.records: dict[tuple, FlowRecord] = {}
        self.max_records = max_records  # a bound: an app scanning the internet cannot grow us forever

    def observe(self, record: FlowRecord) -> tuple[FlowRecord, bool]:
        known = self.records.get(record.table_key)
        if known is not None:
            known.count += record.count
            known.last_seen = max(known.last_seen, record.last_seen)
            if known.dns_name is None:
                known.dns_name = record.dns_name
            return known, False
        if len(self.records) >= self.max_records:
            oldest = min(self.records, key=lambda k: self.records[k].last_seen)
            del self.records[oldest]
        self.records[record.table_key] = record
        return record, True
