"""Flows documents (leakcheck.flows/1) for the collector and agent tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any


def at(seconds_ago: float = 0.0) -> str:
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flow(dst: str = "198.51.100.7", dport: int | None = 443, proto: str = "tcp", exe: str | None = "/usr/bin/curl",
         command: str | None = "curl", count: int = 1, first: str | None = None, last: str | None = None,
         fid: str = "watch.flow-outside-tunnel", dns_name: str | None = None, **extra: Any) -> dict[str, Any]:
    first = first or at(5)
    evidence = {"proto": proto, "src": "192.0.2.10", "sport": 40000, "dst": dst, "dport": dport,
                "interface": "eth0", "uid": 1000, "gid": 1000, "pid": 4242, "command": command, "exe": exe,
                "cgroup": "/user.slice/user-1000.slice", "dns_name": dns_name, "first_seen": first,
                "last_seen": last or first, "count": count, **extra}
    return {"id": fid, "severity": "high",
            "summary": f"{command} (pid 4242, uid 1000) sent {proto} to {dst}:{dport} out of eth0, outside the tunnel",
            "evidence": evidence,
            "recommendation": "Remove the bypass, or add the destination to policy.allowed_direct.",
            "guidance": "NCSC VPN guidance: force all traffic through the VPN (full-device, no split tunnelling)"}


def flows_doc(flows: list[dict[str, Any]], device_id: str = "dev-1", hostname: str = "laptop-1",
              batch_id: str | None = None) -> dict[str, Any]:
    return {"schema": "leakcheck.flows/1", "batch_id": batch_id or str(uuid.uuid4()), "agent_version": "0.1.0",
            "device": {"id": device_id, "hostname": hostname, "os": "linux", "os_version": "Debian 12"},
            "sent_at": at(), "flows": flows}
