"""Fleet load simulation on PostgreSQL (a script, not a test; issue 13).

    python tests/bench/bench_fleet_sim.py [--devices 100000] [--rounds 8] [--change 0.02]

`--devices` enrolled devices each send one report per 15-minute round; in
every round after the first, a share `--change` of them differs from its
previous report (its state moves between pass, two DNS leaks with different
evidence, and an IPv6 warning), the rest repeat it (with fresh report ids,
times and a reconnect measurement that differs every time, as real agents'
do). Every report goes through the collector's own write path
(Store.submit_batch: auth, rate limit, idempotency, change detection,
heartbeat or full row, counters), in-process, in batches of `--batch` from
two writer threads with a connection each, like a replica's group commit;
HTTP and request validation are left out (tests/bench/bench_collector.py
measures those), and so are the reports' pydantic validation: each device's
report objects are copied from validated templates.

A simulated day is 96 rounds. Unless `--rounds 96`, the script runs fewer
and extrapolates the size per day from the steady rounds (every round after
the first, which stores every device's first report in full once), and
says so. Printed: database growth per steady round and per simulated day,
ingest rate with change detection (median over the steady rounds), and
fleet summary latency (GET /api/v1/fleet/summary, in-process HTTP) at that
size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PG = os.environ.get("LEAKCHECK_TEST_PG", "postgresql://leakcheck:leakcheck@localhost/leakcheck_test")
ROUND_S = 900
PROBES = ("routes", "split", "dns", "ipv6", "perapp", "tethering", "reconnect")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _probe(name: str, status: str = "pass", findings: list | None = None) -> dict:
    return {"probe": name, "status": status, "duration_ms": 40, "findings": findings or [], "error": None}


def template(device_id: str, state: int) -> dict:
    """A realistic report for one of four states: 0 pass, 1 and 2 DNS leaks
    to different resolvers, 3 an IPv6 warning. The reconnect probe's info
    finding carries a measurement (reconnect_s) that changes every time."""
    probes = {name: _probe(name) for name in PROBES}
    if state in (1, 2):
        probes["dns"] = _probe("dns", "leak", [{
            "id": "dns.resolver-outside-tunnel", "severity": "high",
            "summary": "DNS queries go to a resolver outside the tunnel.",
            "evidence": {"resolver": "192.0.2.53" if state == 1 else "198.51.100.53", "interface": "wlan0",
                         "route": "default via 192.168.1.1 dev wlan0", "process": "systemd-resolved"},
            "recommendation": "Point the resolver at the tunnel's DNS server.",
            "guidance": "NCSC: force all traffic, including DNS, through the VPN."}])
    if state == 3:
        probes["ipv6"] = _probe("ipv6", "warn", [{
            "id": "ipv6.global-address-no-tunnel-route", "severity": "medium",
            "summary": "A global IPv6 address with no route through the tunnel.",
            "evidence": {"interface": "wlan0", "address": "2001:db8::5"},
            "recommendation": "Disable IPv6 on the interface or route it through the tunnel.",
            "guidance": "NCSC: block or tunnel IPv6."}])
    probes["reconnect"] = _probe("reconnect", "pass", [{
        "id": "reconnect.tunnel-history", "severity": "info", "summary": "The tunnel came back after an outage.",
        "evidence": {"reconnect_s": 2.0, "outages": 1}, "recommendation": "None needed.", "guidance": "-"}])
    statuses = {p["status"] for p in probes.values()}
    verdict = next((s for s in ("leak", "error", "warn") if s in statuses), "pass")
    return {"schema": "leakcheck.report/1", "report_id": str(uuid.uuid4()), "agent_version": "0.1.0",
            "device": {"id": device_id, "hostname": device_id, "os": "linux", "os_version": "Debian 12"},
            "started_at": _iso(time.time()), "finished_at": _iso(time.time()), "trigger": "schedule",
            "tunnel": {"state": "up", "kind": "wireguard", "interfaces": ["wg0"]}, "verdict": verdict,
            "probes": list(probes.values()),
            "agent": {"spool_depth": 0, "dropped": 0, "last_upload": None, "last_error": None}}


class Fleet:
    """Validated template reports per (state), retargeted to a device with
    model_copy (cheap), so that 100,000s of reports need no validation each."""

    def __init__(self, devices: int, seed: int = 1):
        from leakcheck.collector.contract import ReportIn
        self.rng = random.Random(seed)
        self.devices = devices
        self.state = [0 if self.rng.random() < 0.9 else self.rng.choice((1, 2, 3)) for _ in range(devices)]
        self.templates = [ReportIn.model_validate(template("t", s)) for s in range(4)]
        self.bodies = [json.dumps(template("t", s)) for s in range(4)]

    def report(self, i: int, started: float):  # type: ignore[no-untyped-def]
        base = self.templates[self.state[i]]
        reconnect = base.probes[-1]
        finding = reconnect.findings[0].model_copy(update={"evidence": {
            "reconnect_s": round(self.rng.uniform(0.5, 8.0), 2), "outages": 1}})
        return base.model_copy(update={
            "report_id": str(uuid.uuid4()), "started_at": _iso(started), "finished_at": _iso(started + 5),
            "device": base.device.model_copy(update={"id": f"d{i}", "hostname": f"host-{i}"}),
            "probes": [*base.probes[:-1], reconnect.model_copy(update={"findings": [finding]})]})

    def change(self, share: float) -> None:
        for i in range(self.devices):
            if self.rng.random() < share:
                self.state[i] = self.rng.choice([s for s in range(4) if s != self.state[i]])


def setup(store, devices: int) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from leakcheck.collector import security
    from leakcheck.collector.schema import devices as dev_t, tokens

    now = time.time()
    hashes = [security.token_hash(f"lcd_sim-token-{i:08d}") for i in range(devices)]
    with store.engine.begin() as conn:
        for k in range(0, devices, 20000):
            span = range(k, min(devices, k + 20000))
            conn.execute(insert(dev_t), [dict(device_id=f"d{i}", hostname=f"host-{i}", os="linux", os_version="x",
                                              instance=f"inst-{i:012d}", enrolled_at=now, rl_window=0, rl_count=0,
                                              budget_day=0, budget_bytes=0, heartbeats=0) for i in span])
            conn.execute(insert(tokens), [dict(token_hash=hashes[i], kind="device", device_id=f"d{i}",
                                               label=f"host-{i}", created_at=now) for i in span])
    return hashes


def db_size(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())


# Tables that grow with every day of reports (partitions included); the
# others (devices, current findings, tokens) grow with the fleet, not with time.
def history_size(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE c.relkind = 'r' AND "
            "(c.relname LIKE 'reports%%' OR c.relname LIKE 'heartbeats%%' OR c.relname IN ('findings', "
            "'daily_verdicts'))").scalar())


def run_round(store, fleet: Fleet, hashes: list[str], started: float, batch: int) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    from leakcheck.collector.store import Pending

    pending = [Pending(fleet.report(i, started + (i % 600)), fleet.bodies[fleet.state[i]], hashes[i])
               for i in range(fleet.devices)]
    outcomes: dict[int, int] = {}
    lock = threading.Lock()

    def writer(share: list) -> None:  # type: ignore[type-arg]
        conn = store.writer_connection()
        try:
            for k in range(0, len(share), batch):
                for o in store.submit_batch(share[k:k + batch], 10**9, 60, conn, 1 << 40):
                    with lock:
                        outcomes[o.status] = outcomes.get(o.status, 0) + 1
        finally:
            conn.close()
    # Two writers over interleaved shares of the fleet (like a replica's writer threads).
    threads = [threading.Thread(target=writer, args=(pending[w::2],)) for w in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(pending) / (time.perf_counter() - t0), outcomes


def vacuum(engine) -> None:  # type: ignore[no-untyped-def]
    """What autovacuum does during 15 real minutes (a round here takes
    seconds): the devices and current-findings rows are updated by every
    report, and their old versions must be reclaimed for reuse."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM devices, current_findings")


def counts(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {t: int(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar())
                for t in ("reports", "heartbeats", "findings", "current_findings")}


def summary_latency(db: str, repeat: int) -> list[float]:
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings

    app = create_app(Settings(db=db))
    token = app.state.store.create_token("analyst", None, "sim")
    times = []
    with TestClient(app) as client:
        for _ in range(repeat + 1):
            t = time.perf_counter()
            response = client.get("/api/v1/fleet/summary", headers={"Authorization": f"Bearer {token}"})
            times.append(time.perf_counter() - t)
            assert response.status_code == 200, response.text
    app.state.store.engine.dispose()
    return times[1:]  # the first request warms the connection pool


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=8, help="15-minute rounds to run (96 = a full day)")
    parser.add_argument("--change", type=float, default=0.02, help="share of reports differing from the previous")
    parser.add_argument("--batch", type=int, default=256, help="reports per transaction")
    parser.add_argument("--repeat", type=int, default=20, help="fleet summary requests")
    parser.add_argument("--summary-only", action="store_true",
                        help="measure the fleet summary on the database a previous run left (no simulation)")
    args = parser.parse_args()
    if args.summary_only:
        times = summary_latency(PG, args.repeat)
        print(f"fleet summary on the existing database: median {statistics.median(times) * 1000:.0f} ms, "
              f"max {max(times) * 1000:.0f} ms ({args.repeat} requests, HTTP in-process), load average "
              f"{os.getloadavg()[0]:.2f}")
        return 0

    from tests.collector.conftest import reset_postgres

    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import migrate
    from leakcheck.collector.settings import database_url
    from leakcheck.collector.store import Store

    reset_postgres(PG)
    engine = make_engine(database_url(PG))
    migrate(engine)
    store = Store(engine)
    now = time.time()
    first = now - args.rounds * ROUND_S - 600
    store.ensure_partitions(first, days_ahead=2)  # the simulated rounds' days
    hashes = setup(store, args.devices)
    fleet = Fleet(args.devices)
    print(f"fleet sim [postgresql]: {args.devices} devices, {args.rounds} rounds of 15 min, "
          f"{args.change:.0%} changing per round, batches of {args.batch}, 2 writer threads, in-process "
          f"(no HTTP, no per-report validation)")
    rates, growth, histories = [], [], []
    for r in range(args.rounds):
        if r:
            fleet.change(args.change)
        before, history = db_size(engine), history_size(engine)
        rate, outcomes = run_round(store, fleet, hashes, first + r * ROUND_S, args.batch)
        vacuum(engine)
        grew, grew_history = db_size(engine) - before, history_size(engine) - history
        assert set(outcomes) == {201}, outcomes
        print(f"  round {r + 1}: {rate:.0f} reports/s, database +{grew / 2**20:.1f} MiB, of which report "
              f"history +{grew_history / 2**20:.1f} MiB"
              + (" (every device's first report, stored in full once)" if r == 0 else ""))
        if r:
            rates.append(rate)
            growth.append(grew)
            histories.append(grew_history)
    rows = counts(engine)
    print(f"  rows: {rows}")
    if growth:
        per_round = statistics.median(growth)
        print(f"database growth: median {per_round / 2**20:.1f} MiB per steady round -> "
              f"{per_round * 96 / 2**30:.2f} GiB per simulated day of {args.devices * 96:,} reports"
              + ("" if args.rounds >= 97 else f" (extrapolated from {len(growth)} rounds x 96)")
              + "; target < 2 GB")
        print(f"  of which report history (reports, heartbeats, findings: grows with days): "
              f"{statistics.median(histories) * 96 / 2**30:.2f} GiB per day; the rest is updates of the "
              f"devices and current-findings rows (dead versions, reclaimed by HOT pruning and autovacuum, "
              f"bounded by the fleet's size, not by days)")
        print(f"ingest with change detection: median {statistics.median(rates):.0f} reports/s "
              f"(min {min(rates):.0f}, max {max(rates):.0f}) over {len(rates)} steady rounds")
    total = db_size(engine)
    engine.dispose()
    times = summary_latency(PG, args.repeat)
    print(f"fleet summary at {args.devices} devices, database {total / 2**30:.2f} GiB: median "
          f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms ({args.repeat} requests, "
          f"HTTP in-process); target < 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
