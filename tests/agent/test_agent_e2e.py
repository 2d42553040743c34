"""End to end in the lab: the agent in the laptop, the collector in the VPN
gateway's namespace, reached through the real WireGuard tunnel.

```
 [lap] leakcheck agent ---- wg0 ==== tunnel ==== wgvpn 100.100.0.1:8080 [vpn]
       (state, spool, token in tmp)                leakcheck collector serve (SQLite in tmp)
                                                   chromium (Playwright) for the web page
```

Enrollment, a scheduled run, a route change in the laptop that opens a
leak (TunnelVision-style more-specific route) and the network-change run
that reports it within 2 s, the reports in `leakcheck fleet` (run in the
laptop, through the tunnel) and on the fleet web page (headless chromium
in the collector's namespace), a tunnel outage in tunnel-history.json, the
idle agent's size, a second scheduled run, and a clean SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.agent.conftest import SECRET
from tests.lab import CANARY_V4, LAB_CONFIG, LAN_ROUTER, TUNNEL_GATEWAY
from tests.lab import linux
from tests.lab.topology import REPO_ROOT, LabError, merge_config, poll, to_toml

pytestmark = pytest.mark.lab
PORT = 8080
INTERVAL_S = 8
IDLE_RSS_LIMIT = 35 * 2**20


def stored_reports(db: Path) -> list[dict[str, Any]]:
    """What the collector really stored, oldest first (straight from SQLite).
    A scheduled report that repeated its device's state is stored as a
    heartbeat row without a body (issue 13): it appears here as its id and
    trigger only."""
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import heartbeats, reports
    from leakcheck.collector.settings import database_url
    if not db.exists():
        return []
    engine = make_engine(database_url(str(db)))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(reports.c.started_at, reports.c.body)).all()
            beats = conn.execute(select(heartbeats.c.started_at, heartbeats.c.report_id)).all()
        stored = [(t, json.loads(body)) for t, body in rows]
        stored += [(t, {"report_id": rid, "trigger": "schedule", "heartbeat": True}) for t, rid in beats]
        return [doc for _, doc in sorted(stored, key=lambda pair: pair[0])]
    except Exception:
        return []  # not migrated yet
    finally:
        engine.dispose()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get("PYTHONPATH"))))
    return env


def spawn(lab, ns: str, argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", lab.ns_name(ns), *argv], cwd=REPO_ROOT, env=environment(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                            preexec_fn=linux.set_parent_death_signal)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening(lab, address: str, port: int) -> bool:
    import socket
    with lab.in_netns("vpn"):
        try:
            socket.create_connection((address, port), timeout=0.2).close()
            return True
        except OSError:
            return False


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.scenario("wg-quick")
def test_agent_and_collector_in_the_lab(lab, tmp_path):
    url = f"http://{TUNNEL_GATEWAY}:{PORT}"
    db = tmp_path / "collector.sqlite3"
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    # Logs in the lab's work dir: kept with the captures if the test fails.
    collector_log, agent_log = lab.workdir / "collector.log", lab.workdir / "agent.log"
    for log in (collector_log, agent_log):
        log.write_bytes(b"")
    collector = spawn(lab, "vpn", [sys.executable, "-m", "leakcheck", "collector", "serve", "--db", str(db),
                                   "--listen", TUNNEL_GATEWAY, "--port", str(PORT), "--enroll-secret-file",
                                   str(secret), "--device-interval", "3600"], collector_log)
    agent = None
    try:
        poll(lambda: listening(lab, TUNNEL_GATEWAY, PORT) or collector.poll() is not None, 20,
             "the collector to listen in the vpn namespace")
        assert collector.poll() is None, collector_log.read_text()

        config = tmp_path / "agent.toml"
        config.write_text(to_toml(merge_config(LAB_CONFIG, {
            "agent": {"interval": f"{INTERVAL_S}s", "jitter": "0s", "state_dir": str(tmp_path / "state")},
            "collector": {"url": url, "token_file": str(tmp_path / "token")},
        })))
        enrolled = lab.agent("enroll", "--config", str(config), "--secret-file", str(secret), timeout=30)
        assert enrolled.returncode == 0, str(enrolled)
        agent = spawn(lab, "lap", [sys.executable, "-m", "leakcheck", "agent", "--config", str(config)], agent_log)

        # 1. The run at start is a scheduled run; the correct tunnel passes.
        first = poll(lambda: stored_reports(db), 30, "the first scheduled report")
        assert [r["trigger"] for r in first] == ["schedule"]
        assert first[0]["tunnel"]["state"] == "up" and first[0]["tunnel"]["interfaces"] == ["wg0"]
        assert first[0]["verdict"] in ("pass", "warn"), first[0]
        assert first[0]["agent"]["spool_depth"] == 0
        hostname = first[0]["device"]["hostname"]

        # 2. A route change opens a leak; a run triggered by the change reports it.
        # How fast the agent reacts is measured by tests/bench/bench_agent.py
        # (a benchmark: a wall-clock bound here fails on a loaded machine).
        changed_at = time.time()
        lab.ip(f"route add {CANARY_V4.rsplit('.', 1)[0]}.0/24 via {LAN_ROUTER} dev eth0")
        changed = poll(lambda: [r for r in stored_reports(db) if r["trigger"] == "network-change"], 30,
                       "the network-change report")
        delay = epoch(changed[0]["started_at"]) - changed_at
        assert delay >= 0, f"network-change run started {-delay:.2f} s before the route change"
        assert changed[0]["verdict"] == "leak"
        ids = [f["id"] for p in changed[0]["probes"] for f in p["findings"]]
        assert "routes.more-specific-route-outside-tunnel" in ids, ids

        # 3. The analyst's views: `leakcheck fleet` from the laptop, through the tunnel...
        analyst = tmp_path / "analyst"
        analyst.write_text(subprocess.run(
            [sys.executable, "-m", "leakcheck", "collector", "token", "--db", str(db), "create", "--label", "e2e"],
            check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip())
        common = ("--collector", url, "--token-file", str(analyst))
        devices = lab.agent("fleet", "devices", *common, "--format", "json", timeout=30)
        assert devices.returncode == 0, str(devices)
        (device,) = json.loads(devices.stdout)
        assert device["hostname"] == hostname and device["verdict"] == "leak"
        assert device["trigger"] == "network-change" and device["tunnel_state"] == "up"
        summary = lab.agent("fleet", "summary", *common, timeout=30)
        assert summary.returncode == 0, str(summary)
        assert "1 leaking now" in summary.stdout and "routes.more-specific-route-outside-tunnel" in summary.stdout

        # ... and the web page in headless chromium, in the collector's namespace.
        shots = lab.workdir / "web"
        shots.mkdir(exist_ok=True)
        web = lab.exec([sys.executable, "-m", "tests.agent.web_check", url, str(analyst), hostname, str(shots)],
                       ns="vpn", env=environment(), timeout=60, check=False)
        assert web.returncode == 0, web.stderr
        page = json.loads(web.stdout.strip().splitlines()[-1])
        assert page["hostname"] == hostname and page["verdict"] == "leak"
        assert page["triggers"][:2] == ["network-change", "schedule"]
        assert "routes.more-specific-route-outside-tunnel" in page["findings"]
        # Each finding shows its fix and its evidence (the route that leaks).
        assert page["fixes"] and all(f.startswith("Fix: ") and len(f) > len("Fix: ") for f in page["fixes"])
        assert page["evidence"] and all(e.strip() and "none recorded" not in e for e in page["evidence"])

        # The runs' own packet captures (promiscuous mode on eth0 and wg0) are
        # link notifications too: they must not set off run after run.
        # (Scheduled runs may have come and gone meanwhile on a loaded machine.)
        triggers = [r["trigger"] for r in stored_reports(db)]
        assert triggers.count("network-change") == 1 and set(triggers) == {"schedule", "network-change"}, triggers

        # 4. A tunnel outage is recorded with timestamps (for the reconnect probe).
        history_file = tmp_path / "state" / "tunnel-history.json"
        lab.ip("link set wg0 down")
        poll(lambda: history_file.exists() and json.loads(history_file.read_text()), 15, "the outage")
        lab.ip("link set wg0 up")
        history = poll(lambda: [h for h in json.loads(history_file.read_text()) if h["up_at"]], 15,
                       "the recovery")
        assert history[0]["interface"] == "wg0" and history[0]["outage_s"] >= 0

        # 5. The scheduled runs go on at the interval, and the agent idles small:
        # every check ran in a worker process that has exited.
        count = len([r for r in stored_reports(db) if r["trigger"] == "schedule"])
        poll(lambda: len([r for r in stored_reports(db) if r["trigger"] == "schedule"]) > count,
             INTERVAL_S + 15, "a second scheduled report")
        idle = rss(agent.pid)  # `ip netns exec` execs: the pid is the agent's
        assert idle < IDLE_RSS_LIMIT, f"idle agent RSS {idle / 2**20:.1f} MiB"
        assert not Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
    except LabError as exc:
        raise AssertionError(f"{exc}\n--- agent log:\n{agent_log.read_text()[-3000:]}\n--- collector log:\n"
                             f"{collector_log.read_text()[-2000:]}") from None
    finally:
        if agent is not None:
            stop(agent)
        stop(collector)
    log = agent_log.read_text()
    assert "run: trigger=network-change delay_ms=" in log and "stopping (signal)" in log
    assert "Traceback" not in log, log
    assert "Traceback" not in collector_log.read_text()
