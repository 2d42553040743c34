"""Flows benchmarks (a script, not a test): how fast a leaked flow reaches
the collector, and what flows cost the collector and the agent.

    python tests/bench/bench_flows.py [--db sqlite|postgresql] [--runs 15]

1. latency: the real agent service (tests/agent/agent_driver.py: the flowwatch
   child with the stand-in source) and a real `leakcheck collector serve` on
   loopback; a new flow is handed to the source and the API is polled every
   10 ms until it lists it. Floor, measured in the same run: one GET of the
   API (the poll itself).
2. ingest: POSTs of 100-flow documents to the collector (new keys, then the
   same keys again as updates), flows per second; floor: re-POSTing a stored
   batch (validation and auth, nothing stored).
3. agent: CPU seconds per 1,000 flow events through the batcher, the
   document builder and the durable flows spool (fsync per document).

Medians over --runs. Python bytecode is warm (the modules were imported
by an earlier run or by the tests); the collector's is warm after its start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.agent.conftest import CollectorProcess, enroll_cli, write_config  # noqa: E402
from tests.collector.conftest import PG_URL, reset_postgres  # noqa: E402
from tests.collector.flowdocs import flow, flows_doc  # noqa: E402


def median_ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"median {statistics.median(values) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def latency(tmp: Path, collector: CollectorProcess, runs: int) -> None:
    config = write_config(tmp, collector.url, interval="1h", jitter="1s")
    config.write_text(config.read_text() + "[canaries]\nactive = false\n")
    enroll_cli(config, collector.secret_file, collector.url)
    headers = {"Authorization": f"Bearer {collector.analyst_token()}"}
    agent = subprocess.Popen([sys.executable, "-m", "tests.agent.agent_driver", str(config)], cwd=ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(tmp / "agent.log", "ab"))
    try:
        watch = tmp / "state" / "watch.json"
        deadline = time.monotonic() + 60
        while not (watch.exists() and json.loads(watch.read_text()).get("state") == "running"):
            assert time.monotonic() < deadline, "the agent's watch did not start"
            time.sleep(0.05)
        time.sleep(3)  # let the agent's first check finish
        session = requests.Session()
        floor, delays = [], []
        for n in range(runs):
            started = time.monotonic()
            session.get(collector.url + "/api/v1/flows", params={"app": "bench"}, headers=headers)
            floor.append(time.monotonic() - started)
            dst = f"198.51.100.{n + 1}"
            emit = tmp / "emit"
            emit.mkdir(exist_ok=True)
            (emit / ".x").write_text(json.dumps([{"dst": dst, "exe": "/usr/bin/bench"}]))
            t0 = time.monotonic()
            os.replace(emit / ".x", emit / f"{n:04d}.json")
            while True:
                rows = session.get(collector.url + "/api/v1/flows", params={"app": "/usr/bin/bench"},
                                   headers=headers).json()["flows"]
                if any(r["dst"] == dst for r in rows):
                    break
                assert time.monotonic() - t0 < 30, "flow never arrived"
                time.sleep(0.01)
            delays.append(time.monotonic() - t0)
        print(f"  latency, flow handed to the source -> listed by the API: {median_ms(delays)}")
        print(f"    (batch window 0.5 s and the source's 50 ms poll included; floor, one API GET: {median_ms(floor)})")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)


def ingest(collector: CollectorProcess, runs: int) -> None:
    secret = collector.secret_file.read_text()
    enrolled = requests.post(collector.url + "/api/v1/enroll", json={
        "secret": secret, "instance": "instance-bench-000000001",
        "device": {"id": "dev-bench", "hostname": "bench", "os": "linux", "os_version": "x"}}).json()
    headers = {"Authorization": f"Bearer {enrolled['token']}"}
    session = requests.Session()
    new, update, floor = [], [], []
    for run in range(runs):
        flows = [flow(dst=f"203.0.{run}.{n}", count=1) for n in range(100)]
        doc = flows_doc(flows, "dev-bench", "bench")
        started = time.monotonic()
        assert session.post(collector.url + "/api/v1/flows", json=doc, headers=headers).status_code == 201
        new.append(time.monotonic() - started)
        started = time.monotonic()
        assert session.post(collector.url + "/api/v1/flows", json=doc, headers=headers).status_code == 200
        floor.append(time.monotonic() - started)
        for f in flows:
            f["evidence"]["count"] = 5
        started = time.monotonic()
        assert session.post(collector.url + "/api/v1/flows", json=flows_doc(flows, "dev-bench", "bench"),
                            headers=headers).status_code == 201
        update.append(time.monotonic() - started)
    rate = lambda xs: 100 / statistics.median(xs)  # noqa: E731
    print(f"  ingest, 100-flow document of new keys: {median_ms(new)} ({rate(new):.0f} flows/s)")
    print(f"  ingest, 100-flow document of updates:  {median_ms(update)} ({rate(update):.0f} flows/s)")
    print(f"    floor, a stored batch re-POSTed (validated, nothing stored): {median_ms(floor)}")


def agent_cpu(tmp: Path, runs: int) -> None:
    from leakcheck import config as config_mod
    from leakcheck.agent.delivery import open_flow_spool
    from leakcheck.agent.flowwatch import FlowBatcher, documents

    config = config_mod.from_mapping({"agent": {"state_dir": str(tmp / "cpu")}})
    device = {"id": "dev-bench", "hostname": "bench", "os": "linux", "os_version": "x"}
    per_thousand = []
    for run in range(runs):
        spool = open_flow_spool(config)
        clock = [0.0]
        batcher = FlowBatcher(0.5, 10.0, clock=lambda: clock[0])
        events = [flow(dst=f"198.51.{n % 50}.{n % 200}", count=n) for n in range(1000)]
        started = time.process_time()
        for n, event in enumerate(events):
            batcher.add(event)
            clock[0] += 0.002  # 500 events/s
            if batcher.due_at() is not None and clock[0] >= batcher.due_at():
                flows, _ = batcher.take()
                for doc in documents(flows, device, "bench"):
                    spool.add(doc)
        per_thousand.append(time.process_time() - started)
        for entry in spool.entries():
            spool.remove(entry)
    print(f"  agent CPU per 1,000 flow events (batch, build, spool with fsync): "
          f"median {statistics.median(per_thousand) * 1000:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        db = str(tmp / "collector.sqlite3")
        if args.db == "postgresql":
            reset_postgres(PG_URL)
            db = PG_URL
        collector = CollectorProcess(tmp, db=db, extra=("--rate-limit", "100000"))
        collector.start()
        try:
            print(f"flows benchmark, {args.db}, {args.runs} runs each, bytecode cache warm")
            latency(tmp, collector, args.runs)
            ingest(collector, args.runs)
            agent_cpu(tmp, args.runs)
        finally:
            collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
