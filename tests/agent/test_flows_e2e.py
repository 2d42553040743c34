"""Agent -> collector, end to end on loopback, for the live watch's flows:
the real agent service (its check worker, the flowwatch child, the flows
spool and uploader) with a stand-in flow source (tests/agent/flow_producer.py),
and a real `leakcheck collector serve` process over SQLite and PostgreSQL.

- a flow produced at t0 is stored and visible in GET /api/v1/flows within 3 s;
- with the collector down, flows (new ones and updates) wait in the flows
  spool and are delivered once it is back: none lost, none doubled, and the
  updates of a busy flow are rate-bounded (30 packets, one update);
- `leakcheck status` shows the watch and its counts; SIGTERM stops it all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from tests.agent.conftest import CollectorProcess, enroll_cli, write_config
from tests.collector.conftest import PG_URL, reset_postgres

REPO = Path(__file__).resolve().parents[2]


def poll(check: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(step)


class Fleet:
    def __init__(self, collector: CollectorProcess, token: str):
        self.collector = collector
        self.headers = {"Authorization": f"Bearer {token}"}

    def flows(self) -> dict[tuple, dict[str, Any]]:
        try:
            answer = requests.get(self.collector.url + "/api/v1/flows", headers=self.headers, timeout=2)
        except requests.RequestException:
            return {}
        assert answer.status_code == 200, answer.text
        return {(f["app"], f["dst"], f["dport"]): f for f in answer.json()["flows"]}

    def stored(self) -> tuple[int, int]:
        """(flow rows, flow batches) straight from the database."""
        from sqlalchemy import func, select

        from leakcheck.collector.db import make_engine
        from leakcheck.collector.schema import flow_batches, flows
        from leakcheck.collector.settings import database_url
        engine = make_engine(database_url(self.collector.db))
        try:
            with engine.connect() as conn:
                return (conn.execute(select(func.count()).select_from(flows)).scalar(),
                        conn.execute(select(func.count()).select_from(flow_batches)).scalar())
        finally:
            engine.dispose()


def emit(tmp: Path, name: str, packets: list[dict[str, Any]]) -> None:
    directory = tmp / "emit"
    directory.mkdir(exist_ok=True)
    (directory / f".{name}").write_text(json.dumps(packets))
    os.replace(directory / f".{name}", directory / f"{name}.json")  # the producer sees it whole


def watch_state(tmp: Path) -> dict[str, Any]:
    try:
        return json.loads((tmp / "state" / "watch.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "collector.sqlite3")
    reset_postgres(PG_URL)
    return PG_URL


def test_flows_reach_the_collector_within_seconds_and_survive_an_outage(tmp_path: Path, db: str) -> None:
    collector = CollectorProcess(tmp_path, db=db, extra=("--rate-limit", "100000"))
    collector.start()
    agent = None
    try:
        config = write_config(tmp_path, collector.url, interval="1h", jitter="1s")
        # The agent's check runs on this host too: inference only, no test packets.
        config.write_text(config.read_text() + "[canaries]\nactive = false\n")
        enroll_cli(config, collector.secret_file, collector.url)
        fleet = Fleet(collector, collector.analyst_token())
        agent = subprocess.Popen([sys.executable, "-m", "tests.agent.agent_driver", str(config)], cwd=REPO,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=open(tmp_path / "agent.log", "ab"))
        assert poll(lambda: watch_state(tmp_path).get("state") == "running", 30), \
            (watch_state(tmp_path), (tmp_path / "agent.log").read_text()[-3000:])

        # 1. A flow produced at t0 is in the API within 3 s.
        t0 = time.monotonic()
        emit(tmp_path, "first", [{"dst": "198.51.100.7", "exe": "/usr/bin/curl"}])
        seen = poll(lambda: fleet.flows().get(("/usr/bin/curl", "198.51.100.7", 443)), 10)
        elapsed = time.monotonic() - t0
        assert seen, (tmp_path / "agent.log").read_text()[-3000:]
        assert elapsed < 3.0, f"the flow took {elapsed:.2f} s to reach the API"
        assert seen["count"] == 1 and seen["finding_id"] == "watch.flow-outside-tunnel"
        assert seen["evidence"]["interface"] == "eth0" and seen["evidence"]["pid"] == 4242

        # 2. The collector is down: new flows and a busy flow's packets wait in the spool.
        collector.stop()
        emit(tmp_path, "outage", [{"dst": f"203.0.113.{n}", "exe": None, "command": "ssh", "dport": 22}
                                  for n in range(1, 6)]
             + [{"dst": "198.51.100.7", "exe": "/usr/bin/curl"}] * 30)
        assert poll(lambda: any((tmp_path / "state" / "flows").glob("*.json")), 5), "nothing spooled"
        time.sleep(2)
        assert fleet.flows() == {}  # still down
        collector.start()

        expected = {("/usr/bin/curl", "198.51.100.7", 443): 31,
                    **{("ssh", f"203.0.113.{n}", 22): 1 for n in range(1, 6)}}

        def delivered() -> bool:
            flows = fleet.flows()
            return {k: f["count"] for k, f in flows.items()} == expected
        assert poll(delivered, 60, 0.25), ({k: f["count"] for k, f in fleet.flows().items()},
                                           (tmp_path / "agent.log").read_text()[-3000:])
        assert poll(lambda: not list((tmp_path / "state" / "flows").glob("*.json")), 10)
        state = watch_state(tmp_path)
        # 6 keys sent as new, and the busy flow's 30 packets as one rate-bounded update.
        assert (state["flows_new"], state["flow_updates"], state["flows_seen"]) == (6, 1, 36), state
        rows, batches = fleet.stored()
        assert rows == 6  # none doubled (one row per key), none lost
        assert batches == state["documents"]  # every document stored exactly once
        assert not list((tmp_path / "state" / "flows" / "quarantine").glob("*")) if \
            (tmp_path / "state" / "flows" / "quarantine").exists() else True

        status = subprocess.run([sys.executable, "-m", "leakcheck", "status", "--json", "--config", str(config)],
                                cwd=REPO, capture_output=True, text=True, check=True)
        watch = json.loads(status.stdout)["watch"]
        assert (watch["state"], watch["flows_new"], watch["spool_documents"]) == ("running", 6, 0)
        assert watch["last_upload"] is not None
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                raise
            assert code == 0, (tmp_path / "agent.log").read_text()[-3000:]
            assert watch_state(tmp_path)["state"] == "stopped"
        collector.stop()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_the_watch_dies_with_a_killed_agent(tmp_path: Path) -> None:
    """SIGKILL of the agent: its watch child gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and ends, so the watch's kernel filter (owned by the
    child's nftables socket) cannot outlive the agent."""
    config = write_config(tmp_path, "http://127.0.0.1:9", interval="1h", jitter="1s")
    config.write_text(config.read_text() + "[canaries]\nactive = false\n")
    agent = subprocess.Popen([sys.executable, "-m", "tests.agent.agent_driver", str(config)], cwd=REPO,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / "agent.log", "ab"))
    try:
        assert poll(lambda: watch_state(tmp_path).get("state") == "running", 30), watch_state(tmp_path)
        watchers = [p for p in children(agent.pid) if "leakcheck.agent.flowwatch" in
                    Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(watchers) == 1, children(agent.pid)
        agent.kill()
        agent.wait(10)
        assert poll(lambda: not alive(watchers[0]), 5), "the watch outlived the agent"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
