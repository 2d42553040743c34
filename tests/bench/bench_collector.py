"""Collector benchmarks (a script, not a test).

    python tests/bench/bench_collector.py ingest [--db sqlite|postgresql] [--workers 2]
    python tests/bench/bench_collector.py summary [--db ...] [--reports 1000000 --devices 20000]
    python tests/bench/bench_collector.py commit-cost [--batch 16 --runs 3]

ingest: reports/s sustained from concurrent clients on loopback, through
the real HTTP stack (uvicorn workers, validation, auth, storage). Clients are
light: `--clients` processes, each keeping `--connections` keep-alive HTTP/1.1
connections busy from one asyncio loop with pre-built requests (they share
the machine's cores with the server). `--sync-clients` is the older, heavier
client (one http.client connection per process) for comparison.
Each run also measures its floor: the same clients and requests against a
trivial server (`--workers` processes answering every request with a fixed
201 from a bare asyncio protocol). No collector can be measured faster than
that on this machine; the collector's figure is read against it.
summary: fleet-summary latency over a database filled directly with
`--reports` reports from `--devices` devices (filling over HTTP would take
far longer than the query being measured).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PG = os.environ.get("LEAKCHECK_TEST_PG", "postgresql://leakcheck:leakcheck@localhost/leakcheck_test")
SECRET = "bench-enrollment-secret-0123456789"


def database(kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return str(tmp / "bench.sqlite3")
    from tests.collector.conftest import reset_postgres
    reset_postgres(PG)
    return PG


def report(device_id: str, when: datetime, leak: bool, seq: int | None = None) -> dict:
    """One report; with `seq`, its evidence is unlike any other's, so the collector
    stores it as a full row (a change), never as a heartbeat."""
    started = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    evidence: dict = {"resolver": "192.0.2.53", **({"seq": seq} if seq is not None else {})}
    finding = [{"id": "dns.resolver-outside-tunnel", "severity": "high", "summary": "DNS leaks.",
                "evidence": evidence, "recommendation": "Fix.", "guidance": "NCSC"}]
    return {"schema": "leakcheck.report/1", "report_id": str(uuid.uuid4()), "agent_version": "0.1.0",
            "device": {"id": device_id, "hostname": device_id, "os": "linux", "os_version": "Debian 12"},
            "started_at": started, "finished_at": started, "trigger": "schedule",
            "tunnel": {"state": "up", "kind": "wireguard", "interfaces": ["wg0"]},
            "verdict": "leak" if leak else "pass",
            "probes": [{"probe": "dns", "status": "leak" if leak else "pass", "duration_ms": 5,
                        "findings": finding if leak else [], "error": None},
                       {"probe": "routes", "status": "pass", "duration_ms": 3, "findings": [], "error": None}],
            "agent": {"spool_depth": 0, "dropped": 0, "last_upload": None, "last_error": None}}


def client(port: int, jobs: list[tuple[str, bytes]], out: multiprocessing.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    failures = 0
    for token, body in jobs:
        conn.request("POST", "/api/v1/reports", body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        failures += response.status not in (200, 201)
    out.put(failures)


def async_client(port: int, jobs: list[tuple[str, bytes]], connections: int, out: multiprocessing.Queue) -> None:
    import asyncio

    requests = [b"POST /api/v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\n\r\n" + body for token, body in jobs]

    async def connection(share: list[bytes]) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        failures = 0
        for request in share:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            failures += status not in (200, 201)
        writer.close()
        return failures

    async def main() -> int:
        return sum(await asyncio.gather(*(connection(requests[k::connections]) for k in range(connections))))
    out.put(asyncio.run(main()))


def floor_server(port: int) -> None:
    """The floor: reads each request (headers, Content-Length body) and
    answers a fixed 201, nothing else. Several processes share the port."""
    import asyncio
    import socket

    answer = (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n"
              + b'{"report_id": "00000000-0000-0000-0000-000000000000", "stored":1}')

    class Floor(asyncio.Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
                if len(self.buffer) < end + 4 + length:
                    return
                self.buffer = self.buffer[end + 4 + length:]
                self.transport.write(answer)

    async def main() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        server = await asyncio.get_running_loop().create_server(Floor, sock=sock)
        await server.serve_forever()
    try:
        import uvloop  # what uvicorn runs on here, if installed
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def ingest(args: argparse.Namespace) -> None:
    """`--runs` fresh databases and servers; each run's rate and its floor,
    then the medians (the machine is shared: one run says little)."""
    load = os.getloadavg()[0]
    runs = [ingest_once(args) for _ in range(args.runs)]
    rates, floors = [r for r, _ in runs], [f for _, f in runs]
    # Either way the server has imported everything before the clock starts.
    cache = ("not written (PYTHONDONTWRITEBYTECODE set: the server compiles at start, before timing)"
             if os.environ.get("PYTHONDONTWRITEBYTECODE") else "warm (__pycache__ from earlier imports)")
    print(f"ingest [{args.db}, {args.workers} worker(s)]: median {statistics.median(rates):.0f} reports/s "
          f"over {len(rates)} runs (min {min(rates):.0f}, max {max(rates):.0f}); floor (same clients, trivial "
          f"server): median {statistics.median(floors):.0f} requests/s; load average before "
          f"{load:.2f}; bytecode cache {cache}")


def drive(args: argparse.Namespace, port: int, jobs: list[tuple[str, bytes]]) -> tuple[float, int]:
    """Run the client processes over `jobs`: (requests/s, failures)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    shares = [jobs[k::args.clients] for k in range(args.clients)]
    if args.sync_clients:
        procs = [multiprocessing.Process(target=client, args=(port, share, queue)) for share in shares]
    else:
        procs = [multiprocessing.Process(target=async_client, args=(port, share, args.connections, queue))
                 for share in shares]
    start = time.perf_counter()
    for p in procs:
        p.start()
    failures = sum(queue.get() for _ in procs)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join()
    return len(jobs) / elapsed, failures


def measure_floor(args: argparse.Namespace, jobs: list[tuple[str, bytes]]) -> float:
    port = 19000 + random.randrange(1000)
    servers = [multiprocessing.Process(target=floor_server, args=(port,), daemon=True) for _ in range(args.workers)]
    for s in servers:
        s.start()
    try:
        for _ in range(100):
            try:
                socket_probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                socket_probe.connect()
                socket_probe.close()
                break
            except OSError:
                time.sleep(0.05)
        rate, _ = drive(args, port, jobs)
        return rate
    finally:
        for s in servers:
            s.terminate()
            s.join()


def ingest_once(args: argparse.Namespace) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="lcbench-"))
    db = database(args.db, tmp)
    (tmp / "secret").write_text(SECRET)
    port = 18000 + random.randrange(1000)
    server = subprocess.Popen([sys.executable, "-m", "leakcheck", "collector", "serve", "--db", db,
                               "--port", str(port), "--workers", str(args.workers), "--enroll-secret-file",
                               str(tmp / "secret"), "--rate-limit", "1000000",
                               # --alerts: the alert dispatcher runs too (every event to a JSON-lines file)
                               *(["--siem-jsonl", str(tmp / "events.jsonl")] if args.alerts else [])], cwd=ROOT)
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        tokens = []
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(args.devices):
            conn.request("POST", "/api/v1/enroll", body=json.dumps({
                "secret": SECRET, "instance": f"bench-instance-{i:08d}",
                "device": {"id": f"bench-{i}", "hostname": f"bench-{i}", "os": "linux", "os_version": "x"}}),
                headers={"Content-Type": "application/json"})
            tokens.append(json.loads(conn.getresponse().read())["token"])
        now = datetime.now(timezone.utc)
        jobs = [(tokens[i % args.devices],
                 json.dumps(report(f"bench-{i % args.devices}", now - timedelta(seconds=i),
                                   True if args.all_changes else i % 7 == 0,
                                   i if args.all_changes else None)).encode())
                for i in range(args.count)]
        rate, failures = drive(args, port, jobs)
        clients = (f"{args.clients} sync client processes" if args.sync_clients else
                   f"{args.clients} client processes x {args.connections} connections")
        print(f"ingest [{args.db}, {args.workers} worker(s), {clients}, {args.devices} devices"
              f"{', every report a change (full rows)' if args.all_changes else ''}]: "
              f"{args.count} reports at {rate:.0f} reports/s ({failures} failed)", flush=True)
    finally:
        server.terminate()
        server.wait()
    floor = measure_floor(args, jobs)
    print(f"  floor: the same {args.count} requests to a trivial server: {floor:.0f} requests/s", flush=True)
    return rate, floor


def fill(db: str, reports: int, devices: int) -> None:
    """Bulk-load the tables the way submissions would have left them."""
    from sqlalchemy import insert

    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import (current_findings, daily_verdicts, devices as dev_t,
                                            findings, migrate, reports as rep_t)
    from leakcheck.collector.settings import database_url

    engine = make_engine(database_url(db))
    migrate(engine)
    rng = random.Random(1)
    now = time.time()
    per_day: dict[tuple[str, str], int] = {}
    batch = 20000
    with engine.begin() as conn:
        conn.execute(insert(dev_t), [dict(
            device_id=f"d{i}", hostname=f"host-{i}", os=rng.choice(["linux", "darwin", "windows"]),
            os_version="x", instance=f"i{i}", enrolled_at=now - 90 * 86400, last_seen=now,
            last_report_id=None, last_started_at=now - rng.uniform(0, 3 * 86400),
            last_verdict=rng.choice(["pass"] * 8 + ["leak", "warn"]), last_trigger="schedule",
            tunnel_state="up", tunnel_kind="wireguard", agent_version="0.1.0", spool_depth=0, dropped=0,
            reconnect_s=rng.choice([None, None, rng.uniform(1, 60)]), rl_window=0, rl_count=0)
            for i in range(devices)])
        conn.execute(insert(current_findings), [dict(device_id=f"d{i}", finding_id=rng.choice(
            ["dns.resolver-outside-tunnel", "routes.default-route-outside-tunnel", "ipv6.ipv6-outside-tunnel"]),
            probe="dns") for i in range(0, devices, 7)])
    done = 0
    body = json.dumps(report("d0", datetime.now(timezone.utc), False))
    while done < reports:
        rows, frows = [], []
        for k in range(min(batch, reports - done)):
            n = done + k
            started = now - (n / reports) * 60 * 86400
            verdict = "leak" if n % 9 == 0 else "pass"
            rid = str(uuid.UUID(int=n + 1))
            rows.append(dict(report_id=rid, device_id=f"d{n % devices}", received_at=started,
                             started_at=started, finished_at=started + 2, trigger="schedule",
                             verdict=verdict, tunnel_state="up", tunnel_kind="wireguard",
                             agent_version="0.1.0", reconnect_s=None, body=body))
            if verdict == "leak":
                frows.append(dict(report_id=rid, device_id=f"d{n % devices}", probe="dns",
                                  finding_id="dns.resolver-outside-tunnel", severity="high",
                                  summary="DNS leaks.", started_at=started))
            day = datetime.fromtimestamp(started, timezone.utc).date().isoformat()
            per_day[(day, verdict)] = per_day.get((day, verdict), 0) + 1
        with engine.begin() as conn:
            conn.execute(insert(rep_t), rows)
            if frows:
                conn.execute(insert(findings), frows)
        done += len(rows)
    with engine.begin() as conn:
        conn.execute(insert(daily_verdicts), [dict(day=d, verdict=v, reports=c) for (d, v), c in per_day.items()])
    if engine.dialect.name == "postgresql":
        # What autovacuum does soon after a bulk load: statistics, and the
        # visibility map that lets count queries use index-only scans.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def summary(args: argparse.Namespace) -> None:
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="lcbench-"))
    db = database(args.db, tmp)
    t0 = time.perf_counter()
    fill(db, args.reports, args.devices)
    print(f"filled {args.reports} reports from {args.devices} devices in {time.perf_counter() - t0:.0f} s")
    app = create_app(Settings(db=db))
    token = app.state.store.create_token("analyst", None, "bench")
    with TestClient(app) as http_client:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            response = http_client.get("/api/v1/fleet/summary", headers={"Authorization": f"Bearer {token}"})
            times.append(time.perf_counter() - t)
            assert response.status_code == 200
        data = response.json()
    assert data["devices"] == args.devices
    print(f"fleet summary [{args.db}] over {args.reports} reports / {args.devices} devices: "
          f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
          f"({args.repeat} requests, HTTP in-process)")


def commit_cost(args: argparse.Namespace) -> None:
    """The storage path alone (Store.submit_batch, no HTTP), SQLite under
    synchronous=NORMAL and FULL, same batches: what durability costs per
    batch, without the HTTP stack's noise on a shared machine."""
    from sqlalchemy import event

    from leakcheck.collector import security
    from leakcheck.collector.contract import ReportIn
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import migrate
    from leakcheck.collector.store import Pending, Store

    results: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
    for _ in range(args.runs):
        for mode in results:
            tmp = Path(tempfile.mkdtemp(prefix="lcbench-"))
            engine = make_engine("sqlite:///" + str(tmp / "c.sqlite3"))

            @event.listens_for(engine, "connect")
            def _mode(dbapi_conn, _record, mode=mode) -> None:  # type: ignore[no-untyped-def]
                dbapi_conn.execute(f"PRAGMA synchronous={mode}")  # after db.py's own listener
            migrate(engine)
            store = Store(engine)
            tokens = [store.create_token("device", f"bench-{i}") for i in range(args.devices)]
            with engine.begin() as conn:
                for i in range(args.devices):
                    conn.exec_driver_sql("INSERT INTO devices (device_id, hostname, os, os_version, instance, "
                                         "enrolled_at, rl_window, rl_count) VALUES (?, ?, 'linux', 'x', ?, 0, 0, 0)",
                                         (f"bench-{i}", f"bench-{i}", f"inst-{i}"))
            now = datetime.now(timezone.utc)
            docs = [report(f"bench-{i % args.devices}", now - timedelta(seconds=i), i % 7 == 0)
                    for i in range(args.count)]
            pending = [Pending(ReportIn.model_validate(d), json.dumps(d),
                               security.token_hash(tokens[i % args.devices])) for i, d in enumerate(docs)]
            conn = store.writer_connection()
            start = time.perf_counter()
            for k in range(0, len(pending), args.batch):
                store.submit_batch(pending[k:k + args.batch], 10**9, 60, conn)
            results[mode].append(args.count / (time.perf_counter() - start))
            conn.close()
            engine.dispose()
    for mode, rates in results.items():
        print(f"store [sqlite synchronous={mode}, batches of {args.batch}]: median {statistics.median(rates):.0f} "
              f"reports/s over {len(rates)} runs ({', '.join(f'{r:.0f}' for r in rates)})")


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("ingest")
    a.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--clients", type=int, default=2, help="client processes")
    a.add_argument("--connections", type=int, default=16, help="keep-alive connections per client process")
    a.add_argument("--sync-clients", action="store_true",
                   help="one blocking http.client connection per process instead (older, heavier clients)")
    a.add_argument("--devices", type=int, default=200)
    a.add_argument("--count", type=int, default=10000)
    a.add_argument("--runs", type=int, default=1, help="repeat, print every run and the median")
    a.add_argument("--alerts", action="store_true", help="with the alert dispatcher on (issue 13)")
    a.add_argument("--all-changes", action="store_true",
                   help="every report differs from its device's previous one: all full rows, no heartbeats "
                        "(default: a device's state changes about every third report)")
    c = sub.add_parser("commit-cost")
    c.add_argument("--devices", type=int, default=200)
    c.add_argument("--count", type=int, default=4000)
    c.add_argument("--batch", type=int, default=16, help="reports per transaction (group commit)")
    c.add_argument("--runs", type=int, default=3)
    b = sub.add_parser("summary")
    b.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    b.add_argument("--reports", type=int, default=1_000_000)
    b.add_argument("--devices", type=int, default=20_000)
    b.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    {"ingest": ingest, "summary": summary, "commit-cost": commit_cost}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
