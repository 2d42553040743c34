"""Several stateless replicas over one database: the same reports submitted
concurrently through two apps are stored and counted exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from leakcheck.collector.app import create_app
from tests.collector.conftest import analyst, auth, enroll, leak_finding, make_report


def test_two_replicas_no_double_counting(settings, table_counts):
    one, two = create_app(settings), create_app(settings)
    try:
        with TestClient(one) as a, TestClient(two) as b:
            token = enroll(a)
            reports = [make_report(verdict="leak", findings=[leak_finding()]) for _ in range(30)]

            def submit(args):  # type: ignore[no-untyped-def]
                client, report = args
                return client.post("/api/v1/reports", json=report, headers=auth(token)).status_code

            # Every report goes to both replicas at once, as a retrying agent behind a balancer might.
            jobs = [(c, r) for r in reports for c in (a, b)]
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(submit, jobs))
            assert sorted(set(codes)) in ([200, 201], [201])
            assert codes.count(201) == len(reports)
            counts = table_counts()
            assert counts["reports"] == len(reports) and counts["findings"] == len(reports)
            summary = b.get("/api/v1/fleet/summary", headers=auth(analyst(two))).json()
            assert sum(v for d in summary["trend"] for k, v in d.items() if k != "day") == len(reports)
    finally:
        one.state.store.engine.dispose()
        two.state.store.engine.dispose()
