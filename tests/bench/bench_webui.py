"""Fleet page and device list at scale (issue 13; a script, not a test).

    python tests/bench/bench_webui.py [--db sqlite|postgresql] [--devices 100000] [--reports 300000]

Fills a database directly (bench_collector.fill: in-process inserts, the
tables as submissions leave them), then times through the real ASGI stack
in-process: the overview page (signed-in session), a page of
/api/v1/devices (first, and deep via a cursor from the middle), the
per-finding page, and the floor, a request for the tiny sign-in page
through the same stack. Medians over --repeat requests after one warm-up
request each (not counted). Bytecode cache: whatever this interpreter has
(the collector's modules are imported once, before timing).
Targets: overview and a device page under 100 KB and 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_collector import database, fill  # noqa: E402


def timed(client, path: str, repeat: int, **kw) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """(median ms, max ms, bytes) of GET path."""
    response = client.get(path, **kw)  # warm-up: not counted
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        response = client.get(path, **kw)
        times.append(time.perf_counter() - t)
        assert response.status_code == 200
    return statistics.median(times) * 1000, max(times) * 1000, len(response.content)


def middle_cursor(store, offset: int) -> str:  # type: ignore[no-untyped-def]
    """The cursor a client holds after paging to the middle of the list."""
    from sqlalchemy import select

    from leakcheck.collector import views
    from leakcheck.collector.schema import devices
    with store.engine.connect() as conn:
        row = conn.execute(select(devices.c.hostname, devices.c.device_id)
                           .order_by(devices.c.hostname, devices.c.device_id).offset(offset).limit(1)).one()
    return views.encode_cursor("d", [row.hostname, row.device_id])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--reports", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings

    db = database(args.db, Path(tempfile.mkdtemp(prefix="lcbench-webui-")))
    t0 = time.perf_counter()
    fill(db, args.reports, args.devices)
    print(f"[{args.db}] filled {args.devices} devices, {args.reports} reports in {time.perf_counter() - t0:.0f} s")
    app = create_app(Settings(db=db))
    store = app.state.store
    bearer = {"Authorization": f"Bearer {store.create_token('analyst', None, 'bench')}"}
    session = store.create_session(store.create_token("analyst", None, "bench-web"), 3600)
    with TestClient(app) as client:
        deep = middle_cursor(store, args.devices // 2)
        client.cookies.set("leakcheck_session", session)
        rows = [("floor: GET /login", *timed(client, "/login", args.repeat)),
                ("overview page /", *timed(client, "/", args.repeat)),
                ("/api/v1/devices (first 100)", *timed(client, "/api/v1/devices?limit=100", args.repeat,
                                                      headers=bearer)),
                ("/api/v1/devices (100 after the middle)",
                 *timed(client, f"/api/v1/devices?limit=100&cursor={deep}", args.repeat, headers=bearer)),
                ("/api/v1/devices?verdict=leak (100)",
                 *timed(client, "/api/v1/devices?limit=100&verdict=leak", args.repeat, headers=bearer)),
                ("/findings/dns.resolver-outside-tunnel page",
                 *timed(client, "/findings/dns.resolver-outside-tunnel", args.repeat)),
                ("/api/v1/findings (first 500)", *timed(client, "/api/v1/findings", args.repeat, headers=bearer))]
    print(f"[{args.db}] {args.devices} devices, {args.reports} reports; median of {args.repeat} after a warm-up")
    for name, med, worst, size in rows:
        print(f"  {name:45s} median {med:7.1f} ms  max {worst:7.1f} ms  {size / 1024:7.1f} KB")
    app.state.store.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
