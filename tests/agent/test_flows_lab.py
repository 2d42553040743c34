"""The live watch in the real agent, in the lab, to the collector: a real
process's leak reaches the fleet API within seconds, with its process.

```
 [lap] leakcheck agent (watch: nftables + NFLOG, in its flowwatch child)
       leaker: UDP bound to eth0 ---------> eth0 (in clear)   -> a flow, reported
       twin:   UDP to the same canary ----> wg0 ==== tunnel   -> nothing
       uploads ---- wg0 ==== tunnel ==== wgvpn 100.100.0.1:8081 [vpn] leakcheck collector serve
```
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.agent.conftest import SECRET
from tests.agent.test_agent_e2e import listening, spawn, stop, stored_reports
from tests.lab import CANARY_V4, LAB_CONFIG, TUNNEL_GATEWAY
from tests.lab.topology import REPO_ROOT, merge_config, poll, to_toml

pytestmark = pytest.mark.lab
PORT = 8081
WITHIN_S = 3.0


def sender(lab, key: str, port: int, device: str | None) -> None:  # type: ignore[no-untyped-def]
    bind = f"s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, {device.encode()!r})\n" if device else ""
    script = (f"import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n{bind}"
              f"s.sendto(b'leakcheck-flows', ({CANARY_V4!r}, {port}))\nprint('ready', flush=True)\ntime.sleep(60)\n")
    lab.start_lap_process(key, [sys.executable, "-c", script], ready=b"ready")


@pytest.mark.scenario("wg-quick")
def test_a_real_leak_reaches_the_fleet_api_within_seconds(lab, tmp_path: Path) -> None:
    url = f"http://{TUNNEL_GATEWAY}:{PORT}"
    db = tmp_path / "collector.sqlite3"
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    collector_log, agent_log = lab.workdir / "flows-collector.log", lab.workdir / "flows-agent.log"
    collector = spawn(lab, "vpn", [sys.executable, "-m", "leakcheck", "collector", "serve", "--db", str(db),
                                   "--listen", TUNNEL_GATEWAY, "--port", str(PORT), "--enroll-secret-file",
                                   str(secret)], collector_log)
    agent = None
    try:
        poll(lambda: listening(lab, TUNNEL_GATEWAY, PORT) or collector.poll() is not None, 20, "the collector")
        assert collector.poll() is None, collector_log.read_text()
        config = tmp_path / "agent.toml"
        config.write_text(to_toml(merge_config(LAB_CONFIG, {
            "agent": {"interval": "1h", "jitter": "0s", "state_dir": str(tmp_path / "state")},
            "collector": {"url": url, "token_file": str(tmp_path / "token")}})))
        assert lab.agent("enroll", "--config", str(config), "--secret-file", str(secret), timeout=30).returncode == 0
        agent = spawn(lab, "lap", [sys.executable, "-m", "leakcheck", "agent", "--config", str(config)], agent_log)
        watch = tmp_path / "state" / "watch.json"
        poll(lambda: watch.exists() and '"running"' in watch.read_text(), 30, "the agent's watch")
        analyst = subprocess.run(
            [sys.executable, "-m", "leakcheck", "collector", "token", "--db", str(db), "create", "--label", "lab"],
            check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip()

        def flows() -> list[dict]:
            with lab.in_netns("vpn"):
                answer = requests.get(url + "/api/v1/flows", headers={"Authorization": f"Bearer {analyst}"},
                                      timeout=2)
            assert answer.status_code == 200, answer.text
            return answer.json()["flows"]

        # The agent's own first check (active test packets included) in a correct
        # tunnel is no leak: once its report is in, no flow is.
        poll(lambda: stored_reports(db), 60, "the first scheduled report")
        time.sleep(1.0)
        assert flows() == []
        # The twin: the same canary through the tunnel reports nothing.
        sender(lab, "flows-twin", 7001, None)
        time.sleep(2.0)
        assert [f for f in flows() if f["dport"] == 7001] == []

        t0 = time.monotonic()
        sender(lab, "flows-leak", 7002, "eth0")
        leaked = poll(lambda: [f for f in flows() if f["dst"] == CANARY_V4 and f["dport"] == 7002], 10,
                      "the leaked flow in the collector")
        delay = time.monotonic() - t0
        assert delay < WITHIN_S, f"{delay:.2f} s from the leak to the fleet API"
        (flow,) = leaked
        ev = flow["evidence"]
        assert flow["finding_id"] == "watch.flow-outside-tunnel" and ev["interface"] == "eth0"
        assert ev["proto"] == "udp" and ev["uid"] == 0 and ev["pid"] is not None
        assert flow["app"] == ev["exe"] and ev["exe"].startswith("/") and "python" in ev["exe"]
        assert [f for f in flows() if f["dport"] == 7001] == []
    finally:
        if agent is not None:
            stop(agent)
            agent.wait(15)
        stop(collector)
    assert "Traceback" not in agent_log.read_text(), agent_log.read_text()[-3000:]
