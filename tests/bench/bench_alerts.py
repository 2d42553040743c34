"""Alert dispatcher benchmarks (a script, not a test).

    python tests/bench/bench_alerts.py [--db sqlite|postgresql] [--devices 20000] [--changed 1000] [--runs 5]

Fills `--devices` devices directly (SQL), lets the dispatcher take its
baseline, then measures, each as a median over `--runs`:

- idle tick: nothing changed (the cost paid every poll interval);
- steady tick: the changes of one second at 100,000 devices reporting
  every 15 minutes (111 devices with a new report, none changing state);
- burst tick: `--changed` devices start leaking at once (that many events
  written, with their outbox rows), then stop leaking (as many again);
- flush: delivering those events to a webhook receiver on loopback
  (batches of 500, signed);
- floor: an empty write transaction on the same database, in the same run.

In-process (no child Python): the bytecode cache does not matter here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def fill(engine, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    from leakcheck.collector.schema import devices
    ids = [f"bench-{n:06d}" for n in range(count)]
    now = time.time()
    with engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(devices.insert(), [dict(
                device_id=d, hostname=d, os="linux", os_version="12", instance="i" * 20, enrolled_at=now,
                # Reports spread over the last 15 minutes, as a fleet on a 15-minute interval:
                # the poll's 30 s overlap window holds 1/30 of them.
                last_seen=now - 900 + 900 * n / count, last_report_id=str(uuid.uuid4()),
                last_started_at=now - 900 + 900 * n / count, last_verdict="pass",
                rl_window=0, rl_count=0, budget_day=0, budget_bytes=0)
                for n, d in enumerate(ids[start:start + 5000], start)])
    return ids


def change(engine, ids: list[str], leak: bool) -> None:  # type: ignore[no-untyped-def]
    """New latest reports for `ids` (leaking or not), as ingest would leave them."""
    from sqlalchemy import bindparam, update

    from leakcheck.collector.schema import devices, reports
    now = time.time()
    rows = []
    for d in ids:
        rid = str(uuid.uuid4())
        body = {"device": {"id": d, "hostname": d, "os": "linux"}, "report_id": rid,
                "probes": [{"probe": "dns", "status": "leak" if leak else "pass", "findings": [
                    {"id": "dns.resolver-outside-tunnel", "severity": "high", "summary": "DNS leaks.",
                     "evidence": {"resolver": "192.0.2.53"}, "recommendation": "Fix.", "guidance": "NCSC"}]
                    if leak else []}]}
        rows.append(dict(d=d, rid=rid, body=json.dumps(body)))
    with engine.begin() as conn:
        conn.execute(reports.insert(), [dict(report_id=r["rid"], device_id=r["d"], received_at=now, started_at=now,
                                             finished_at=now, trigger="schedule", verdict="leak" if leak else "pass",
                                             tunnel_state="up", tunnel_kind="wireguard", agent_version="0.1.0",
                                             body=r["body"]) for r in rows])
        conn.execute(update(devices).where(devices.c.device_id == bindparam("d")).values(
            last_seen=now, last_started_at=now, last_report_id=bindparam("rid"),
            last_verdict="leak" if leak else "pass"), rows)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--devices", type=int, default=20000)
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from sqlalchemy import update

    from leakcheck.collector.alerts.config import parse
    from leakcheck.collector.alerts.dispatcher import Dispatcher
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import health, migrate
    from leakcheck.collector.settings import database_url
    from tests.bench.bench_collector import PG, database
    from tests.collector.alert_receivers import WebhookReceiver

    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    engine = make_engine(database_url(database(args.db, tmp)))
    migrate(engine)
    secret = tmp / "hook.secret"
    secret.write_text("bench-webhook-secret-0123456789")
    receiver = WebhookReceiver().start()
    config = parse({"webhook": {"url": receiver.url, "secret_file": str(secret)}, "batch_interval": 0.1})
    dispatcher = Dispatcher(engine, config, device_interval_s=900)
    ids = fill(engine, args.devices)
    dispatcher.store.tick(dispatcher.holder, 30, dispatcher.bounds, [s.sink for s in dispatcher.senders])
    if args.db == "postgresql":
        # What autovacuum does after a bulk load: without statistics the planner
        # guesses a third of the devices match the poll's window and scans them all.
        from sqlalchemy import text
        with engine.begin() as conn:
            conn.execute(text("ANALYZE devices"))
            conn.execute(text("ANALYZE alert_state"))

    def tick() -> tuple[float, int]:
        started = time.perf_counter()
        made = dispatcher.store.tick(dispatcher.holder, 30, dispatcher.bounds, [s.sink for s in dispatcher.senders],
                                     now=time.time())
        return time.perf_counter() - started, int(made or 0)

    def floor() -> float:
        started = time.perf_counter()
        with engine.execution_options(immediate=True).begin() as conn:
            conn.execute(update(health).where(health.c.id == 1).values(checked_at=time.time()))
        return time.perf_counter() - started

    floors = [floor() for _ in range(args.runs * 4)]
    idle = [tick()[0] for _ in range(args.runs * 4)]
    steady, burst, flush, made_counts = [], [], [], []
    for run in range(args.runs):
        change(engine, ids[1000:1111], leak=False)
        steady.append(tick()[0])
        chosen = ids[:args.changed]
        for leak in (True, False):
            change(engine, chosen, leak)
            seconds, made = tick()
            burst.append(seconds)
            made_counts.append(made)
            calls = len(receiver.calls)
            started = time.perf_counter()
            dispatcher._next_flush = {s: 0.0 for s in dispatcher._next_flush}
            dispatcher._flush(dispatcher.senders[0])
            flush.append(time.perf_counter() - started)
            assert sum(len(c.events) for c in receiver.calls[calls:]) == args.changed, "events lost"
    receiver.stop()
    ms = lambda xs: f"{statistics.median(xs) * 1000:8.1f} ms"  # noqa: E731
    print(f"database {args.db}, {args.devices} devices, medians of {args.runs} runs (in-process: bytecode cache n/a)")
    print(f"  floor (empty write transaction)       {ms(floors)}")
    print(f"  idle tick                              {ms(idle)}")
    print(f"  steady tick (111 new reports)          {ms(steady)}")
    print(f"  burst tick ({args.changed} devices change state) {ms(burst)}  events per tick {set(made_counts)}")
    print(f"  flush {args.changed} events to a loopback webhook  {ms(flush)}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
