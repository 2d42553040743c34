"""Two throw-away network namespaces for the agent's end-to-end test.

    [lcA-xxxx: agent, "laptop"] vpn0 192.0.2.2 --veth-- 192.0.2.1 [lcC-xxxx: collector]

Only RFC 5737 addresses; neither namespace is connected to the host's
network. vpn0 is named as the tunnel in the agent's config, so taking it
down is a tunnel outage the agent must record.
"""

from __future__ import annotations

import subprocess
import uuid


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Pair:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.agent_ns, self.collector_ns = f"lcA-{tag}", f"lcC-{tag}"
        self.agent_ip, self.collector_ip = "192.0.2.2", "192.0.2.1"

    def up(self) -> "Pair":
        sh("ip", "netns", "add", self.agent_ns)
        sh("ip", "netns", "add", self.collector_ns)
        for ns in (self.agent_ns, self.collector_ns):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.agent_ns, "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn0p",
           "netns", self.collector_ns)
        sh("ip", "-n", self.agent_ns, "addr", "add", f"{self.agent_ip}/24", "dev", "vpn0")
        sh("ip", "-n", self.collector_ns, "addr", "add", f"{self.collector_ip}/24", "dev", "vpn0p")
        sh("ip", "-n", self.agent_ns, "link", "set", "vpn0", "up")
        sh("ip", "-n", self.collector_ns, "link", "set", "vpn0p", "up")
        return self

    def down(self) -> None:
        for ns in (self.agent_ns, self.collector_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def in_agent(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.agent_ns, *args]

    def in_collector(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.collector_ns, *args]
