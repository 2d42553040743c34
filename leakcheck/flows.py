"""The flows document: what the agent's live watch sends the collector.

The live watch (leakcheck.watch) turns every real flow that leaves outside
the tunnel into a finding of the report contract's shape. The agent sends
those findings as their own versioned document, never inside a report
(`leakcheck.report/1` is public and unchanged):

```json
{"schema": "leakcheck.flows/1", "batch_id": "uuid4", "agent_version": "x.y.z",
 "device": {"id": "...", "hostname": "...", "os": "linux", "os_version": "..."},
 "sent_at": "RFC 3339 UTC",
 "flows": [{"id": "watch.flow-outside-tunnel", "severity": "high", "summary": "...",
            "evidence": {"proto": "tcp", "src": "...", "sport": 40000, "dst": "...", "dport": 443,
                         "interface": "eth0", "uid": 1000, "gid": 1000, "pid": 4242,
                         "command": "curl", "exe": "/usr/bin/curl", "cgroup": "...",
                         "dns_name": null, "first_seen": "RFC 3339", "last_seen": "RFC 3339",
                         "count": 3},
            "recommendation": "...", "guidance": "..."}]}
```

POST /api/v1/flows with the device token; the collector answers
`{"batch_id": ..., "stored": true|false}` (idempotent on batch_id). A flow
is keyed by (application, dst, dport, proto), application = exe or command
(`app_of`); `count` is the cumulative number of packets the agent saw for
that key, so a later document with the same key is an update and the
collector keeps the highest count, the earliest first_seen and the latest
last_seen (applying an update twice changes nothing).

`FlowsContract` is the one definition of the limits: the agent conforms a
document before spooling it (`conform`), the collector's request model
(leakcheck.collector.contract.FlowsIn) is built from the same limits and
runs `problems` too.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any, Iterable

from leakcheck.report import (Contract, clean_evidence, clean_text, evidence_problem, evidence_size, rfc3339,
                              text_problem, time_problem, utcnow)

SCHEMA = "leakcheck.flows/1"
FINDING_IDS = ("watch.flow-outside-tunnel", "watch.flow-predates-tunnel", "watch.dns-outside-tunnel")
# Evidence keys every flow carries (None where unknown), in the watch's order.
EVIDENCE_KEYS = ("proto", "src", "sport", "dst", "dport", "interface", "uid", "gid", "pid", "command", "exe",
                 "cgroup", "dns_name", "first_seen", "last_seen", "count")


class FlowsContract:
    """Limits of `leakcheck.flows/1` beyond those it shares with report/1."""

    FLOWS_MAX = 200  # per document; the agent sends more in several documents
    # The agent keeps each document under this (the collector's default body
    # limit is 256 KiB): a burst of flows becomes several documents.
    DOCUMENT_BYTES = 192 * 1024
    FLOW_TEXT_MAX = 1000  # summary, recommendation, guidance
    PATH_MAX = 4096  # exe, cgroup (Linux PATH_MAX)
    COMMAND_MAX = 1000
    DNS_NAME_MAX = 1024  # 253 octets, escaped (\\DDD) in the worst case
    PROTO = r"^[a-z0-9][a-z0-9-]{0,15}$"
    EVIDENCE_BYTES = 8 * 1024  # per flow, as compact JSON
    DOCUMENT_EVIDENCE_BYTES = 192 * 1024
    PORT_MAX = 65535
    ID_MAX = 2**32 - 1  # uid, gid, pid


def app_of(evidence: dict[str, Any]) -> str:
    """The application a flow belongs to: its executable, else its command,
    else "" (a forwarded client, or a sender gone before it was looked up)."""
    for key in ("exe", "command"):
        value = evidence.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def dedup_key(flow: dict[str, Any]) -> tuple[str, str, Any, str]:
    """(application, dst, dport, proto): the watch's own dedup key."""
    evidence = flow.get("evidence") or {}
    return (app_of(evidence), str(evidence.get("dst")), evidence.get("dport"), str(evidence.get("proto")))


def document(flows: Iterable[dict[str, Any]], device: dict[str, str], agent_version: str,
             batch_id: str | None = None) -> dict[str, Any]:
    return {"schema": SCHEMA, "batch_id": batch_id or str(uuid.uuid4()), "agent_version": agent_version,
            "device": dict(device), "sent_at": rfc3339(utcnow()), "flows": list(flows)}


# -- the checks, shared by agent and collector --------------------------------------

def _address_problem(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return "is not an IP address"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "is not an IP address"
    return None


def flow_problems(where: str, flow: Any) -> tuple[list[str], int]:
    """What the collector refuses in one flow beyond the request model's
    types: unstorable text, bad addresses and times, evidence too large.
    Returns (problems, evidence bytes)."""
    found: list[str] = []
    if not isinstance(flow, dict):
        return found, 0
    for key in ("summary", "recommendation", "guidance"):
        value = flow.get(key)
        if isinstance(value, str) and text_problem(value):
            found.append(f"{where}.{key} {text_problem(value)}")
    evidence = flow.get("evidence")
    if not isinstance(evidence, dict):
        return found, 0
    problem = evidence_problem(evidence)
    if problem:
        return found + [f"{where}.evidence {problem}"], 0
    size = evidence_size(evidence)
    if size > FlowsContract.EVIDENCE_BYTES:
        found.append(f"{where}.evidence is over {FlowsContract.EVIDENCE_BYTES} bytes")
    for key in ("src", "dst"):
        if key in evidence and _address_problem(evidence[key]):
            found.append(f"{where}.evidence.{key} is not an IP address")
    for key in ("first_seen", "last_seen"):
        if isinstance(evidence.get(key), str) and time_problem(evidence[key]):
            found.append(f"{where}.evidence.{key} {time_problem(evidence[key])}")
    first, last = evidence.get("first_seen"), evidence.get("last_seen")
    if isinstance(first, str) and isinstance(last, str) and not found:
        from datetime import datetime
        if datetime.fromisoformat(last.replace("Z", "+00:00")) < datetime.fromisoformat(first.replace("Z", "+00:00")):
            found.append(f"{where}.evidence.last_seen is before first_seen")
    return found, size


def problems(doc: Any) -> list[str]:
    """Walks the raw document (before any model), bounded by the limits."""
    found: list[str] = []
    if not isinstance(doc, dict):
        return found
    device = doc.get("device")
    if isinstance(device, dict):
        for key, value in list(device.items())[:10]:
            if isinstance(value, str) and text_problem(value):
                found.append(f"device.{key} {text_problem(value)}")
    if isinstance(doc.get("sent_at"), str) and time_problem(doc["sent_at"]):
        found.append(f"sent_at {time_problem(doc['sent_at'])}")
    flows = doc.get("flows")
    total = 0
    for n, flow in enumerate(flows[:FlowsContract.FLOWS_MAX] if isinstance(flows, list) else []):
        more, size = flow_problems(f"flows[{n}]", flow)
        found += more
        total += size
    if total > FlowsContract.DOCUMENT_EVIDENCE_BYTES:
        found.append(f"the document's evidence is over {FlowsContract.DOCUMENT_EVIDENCE_BYTES} bytes")
    return found


# -- the agent's side: conform before spooling -------------------------------------

_TEXT_LIMITS = {"command": FlowsContract.COMMAND_MAX, "exe": FlowsContract.PATH_MAX,
                "cgroup": FlowsContract.PATH_MAX, "dns_name": FlowsContract.DNS_NAME_MAX}


def conform_flow(flow: dict[str, Any]) -> dict[str, Any]:
    """One flow made to fit the contract: text cut with a marker, odd
    evidence cleaned, counters bounded. What cannot be made to fit (no
    address, no time) is left for the collector to refuse: the watch
    always fills those, so a refusal is a bug to see, not to hide."""
    out = dict(flow)
    for key in ("summary", "recommendation", "guidance"):
        out[key] = clean_text(str(flow.get(key, "")), FlowsContract.FLOW_TEXT_MAX)
    raw = dict(flow.get("evidence") or {})
    # Numbers first: cleaning would turn one beyond 64 bits into text.
    for key, high in (("sport", FlowsContract.PORT_MAX), ("dport", FlowsContract.PORT_MAX),
                      ("uid", FlowsContract.ID_MAX), ("gid", FlowsContract.ID_MAX), ("pid", FlowsContract.ID_MAX),
                      ("count", Contract.COUNTER_MAX)):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            raw[key] = min(max(value, 1 if key == "count" else 0), high)
    evidence = clean_evidence(raw)
    for key, limit in _TEXT_LIMITS.items():
        if isinstance(evidence.get(key), str):
            evidence[key] = clean_text(evidence[key], limit)
    if evidence_size(evidence) > FlowsContract.EVIDENCE_BYTES:
        # Only the contract's own keys are kept...
        evidence = {k: evidence.get(k) for k in EVIDENCE_KEYS}
    if evidence_size(evidence) > FlowsContract.EVIDENCE_BYTES:
        # ...and if their long texts together are still too much (each is within
        # its own limit, their sum need not be), each is cut shorter, with a marker.
        for key in _TEXT_LIMITS:
            if isinstance(evidence.get(key), str):
                evidence[key] = clean_text(evidence[key], 800)
    out["evidence"] = evidence
    return out


def conform(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    out["device"] = dict(doc.get("device", {}))
    out["device"]["os_version"] = clean_text(str(out["device"].get("os_version", "")))
    out["flows"] = [conform_flow(f) for f in doc.get("flows", [])][:FlowsContract.FLOWS_MAX]
    return out
