"""End to end: the agent in one namespace, the collector in another.
Enrollment, a scheduled run, a network-change run within 2 s of a route
change, tunnel history, clean SIGTERM, and the reports in the fleet view."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import select

from tests.agent.conftest import SECRET
from tests.agent.netns import Pair, sh

ROOT = Path(__file__).resolve().parents[2]
PORT = 8080


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stored_reports(db: Path) -> list[dict[str, Any]]:
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import reports
    from leakcheck.collector.settings import database_url
    engine = make_engine(database_url(str(db)))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(reports.c.body).order_by(reports.c.started_at)).all()
        return [json.loads(r[0]) for r in rows]
    except Exception:
        return []  # not migrated yet
    finally:
        engine.dispose()


def parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def pair():
    p = Pair().up()
    yield p
    p.down()


@pytest.fixture
def lab_collector(pair, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    db = tmp_path / "collector.sqlite3"
    proc = subprocess.Popen(pair.in_collector(
        sys.executable, "-m", "leakcheck", "collector", "serve", "--db", str(db), "--listen",
        pair.collector_ip, "--port", str(PORT), "--enroll-secret-file", str(secret),
        "--device-interval", "3600"), cwd=ROOT, stderr=open(tmp_path / "collector.log", "wb"))
    url = f"http://{pair.collector_ip}:{PORT}"
    wait_for("collector", lambda: subprocess.run(pair.in_agent(
        sys.executable, "-c", f"import socket; socket.create_connection(('{pair.collector_ip}', {PORT}), 1)"),
        capture_output=True).returncode == 0)
    yield url, db, secret
    proc.terminate()
    proc.wait(10)


def test_agent_end_to_end(pair, lab_collector, tmp_path):
    url, db, secret = lab_collector
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[tunnel]
interfaces = ["vpn0"]
[canaries]
ipv4 = ["203.0.113.10"]
ipv6 = ["2001:db8::10"]
[agent]
interval = "1h"
jitter = "0s"
state_dir = "{tmp_path / 'state'}"
[collector]
url = "{url}"
token_file = "{tmp_path / 'token'}"
""")
    sh(*pair.in_agent(sys.executable, "-m", "leakcheck", "enroll", "--config", str(config),
                      "--secret-file", str(secret)))
    log_path = tmp_path / "agent.log"
    agent = subprocess.Popen(pair.in_agent(sys.executable, "-m", "leakcheck", "agent", "--config", str(config)),
                             cwd=ROOT, stderr=open(log_path, "wb"))
    try:
        first = wait_for("the scheduled run's report", lambda: stored_reports(db))
        assert [r["trigger"] for r in first] == ["schedule"]
        assert first[0]["tunnel"] == {"state": "up", "kind": "other", "interfaces": ["vpn0"]}
        assert first[0]["agent"]["spool_depth"] == 0
        time.sleep(0.5)  # let the agent go idle

        changed_at = time.time()
        sh(*pair.in_agent("ip", "route", "add", "198.51.100.0/24", "via", pair.collector_ip))
        reports = wait_for("the network-change report",
                           lambda: [r for r in stored_reports(db) if r["trigger"] == "network-change"])
        delay = parse(reports[0]["started_at"]) - changed_at
        assert delay < 2.0, f"network-change run started {delay:.2f} s after the route change"

        # A tunnel outage is recorded with timestamps for the reconnect probe.
        sh(*pair.in_agent("ip", "link", "set", "vpn0", "down"))
        history_file = tmp_path / "state" / "tunnel-history.json"
        wait_for("the outage", lambda: history_file.exists() and json.loads(history_file.read_text()))
        sh(*pair.in_agent("ip", "link", "set", "vpn0", "up"))
        history = wait_for("the recovery", lambda: [h for h in json.loads(history_file.read_text())
                                                    if h["up_at"] is not None])
        assert history[0]["interface"] == "vpn0" and history[0]["outage_s"] >= 0

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    log = log_path.read_text()
    assert "run: trigger=network-change delay_ms=" in log and "stopping (signal)" in log
    assert "Traceback" not in log
