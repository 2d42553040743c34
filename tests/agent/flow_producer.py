"""A stand-in flow source for the agent tests: the interface the agent
consumes from the live watch (leakcheck.agent.flowwatch), producing flow
records of exactly the watch's shape, on demand.

The test drops `<name>.json` files into `<state_dir>/../emit/`, each a list
of packets `{"dst": ..., "dport": ..., "proto": ..., "exe": ..., "command": ...}`;
the producer counts them per dedup key as the kernel watch does (cumulative
count, first and last seen) and calls on_flow for every packet, then
renames the file to `.done`. Calling on_flow per packet (the kernel watch
calls it at most every 10 s per key) puts the agent's own rate bound on
updates to the test.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Producer:
    watching = ["stand-in flows from tests/agent/flow_producer.py"]
    cannot: list[str] = []

    def __init__(self, config: Any, on_flow: Callable[[dict[str, Any]], None]):
        self.dir = Path(config.get("agent", "state_dir")).parent / "emit"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.on_flow = on_flow
        self.records: dict[tuple, dict[str, Any]] = {}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for path in sorted(self.dir.glob("*.json")):
                for packet in json.loads(path.read_text()):
                    self.on_flow(self._record(packet))
                path.rename(path.with_suffix(".done"))
            stop.wait(0.05)

    def _record(self, packet: dict[str, Any]) -> dict[str, Any]:
        exe, command = packet.get("exe"), packet.get("command", "curl")
        key = (exe or command, packet["dst"], packet.get("dport", 443), packet.get("proto", "tcp"))
        now = _now()
        known = self.records.get(key)
        if known is None:
            known = self.records[key] = {
                "proto": key[3], "src": "192.0.2.10", "sport": 40000 + len(self.records), "dst": key[1],
                "dport": key[2], "interface": "eth0", "uid": 1000, "gid": 1000, "pid": 4242, "command": command,
                "exe": exe, "cgroup": "/user.slice/user-1000.slice", "dns_name": None, "first_seen": now,
                "last_seen": now, "count": 0}
        known["count"] += 1
        known["last_seen"] = now
        return {"id": "watch.flow-outside-tunnel", "severity": "high",
                "summary": f"{command} (pid 4242, uid 1000) sent {key[3]} to {key[1]}:{key[2]} out of eth0, "
                           "outside the tunnel",
                "evidence": dict(known),
                "recommendation": "Remove the bypass, or add the destination to policy.allowed_direct.",
                "guidance": "NCSC VPN guidance: force all traffic through the VPN (full-device, no split tunnelling)"}
