"""The collector API over a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json

from tests.collector.conftest import SECRET, analyst, auth, days_ago, enroll, leak_finding, make_report


def test_enroll_then_submit_then_read(client, app):
    token = enroll(client)
    report = make_report(verdict="leak", findings=[leak_finding()])
    first = client.post("/api/v1/reports", json=report, headers=auth(token))
    assert first.status_code == 201 and first.json() == {"report_id": report["report_id"], "stored": True}

    reader = auth(analyst(app))
    devices = client.get("/api/v1/devices", headers=reader).json()
    assert [(d["device_id"], d["verdict"]) for d in devices] == [("dev-1", "leak")]
    latest = client.get("/api/v1/devices/dev-1/latest", headers=reader).json()
    assert latest == report
    detail = client.get("/api/v1/devices/dev-1", headers=reader).json()
    assert detail["current_findings"] == [{"finding_id": "dns.resolver-outside-tunnel", "probe": "dns",
                                           "first_seen": report["started_at"], "last_seen": report["started_at"]}]
    assert len(detail["history"]) == 1


def test_resubmission_is_idempotent(client, table_counts):
    token = enroll(client)
    report = make_report()
    assert client.post("/api/v1/reports", json=report, headers=auth(token)).status_code == 201
    before = table_counts()
    again = client.post("/api/v1/reports", json=report, headers=auth(token))
    assert again.status_code == 200 and again.json()["stored"] is False
    assert table_counts() == before


def test_tokens_are_stored_hashed(client, app):
    token = enroll(client)
    from sqlalchemy import select

    from leakcheck.collector.schema import tokens
    with app.state.store.engine.connect() as conn:
        stored = [r.token_hash for r in conn.execute(select(tokens.c.token_hash))]
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_wrong_enrollment_secret(client, table_counts):
    before = table_counts()
    response = client.post("/api/v1/enroll", json={
        "secret": "not-the-secret", "instance": "instance-aaaaaaaaaaaa",
        "device": {"id": "dev-9", "hostname": "x", "os": "linux", "os_version": "y"}})
    assert response.status_code == 403
    assert table_counts() == before


def test_device_token_cannot_read(client):
    token = enroll(client)
    for path in ("/api/v1/devices", "/api/v1/devices/dev-1", "/api/v1/findings", "/api/v1/fleet/summary",
                 "/api/v1/export", "/api/v1/devices/dev-1/latest"):
        assert client.get(path, headers=auth(token)).status_code == 403, path


def test_analyst_token_cannot_submit(client, app, table_counts):
    enroll(client)
    reader = auth(analyst(app))
    before = table_counts()
    response = client.post("/api/v1/reports", json=make_report(), headers=reader)
    assert response.status_code == 403
    assert table_counts() == before


def test_bad_tokens_are_refused_and_nothing_stored(client, app, table_counts):
    token = enroll(client)
    other = enroll(client, device_id="dev-2", hostname="laptop-2", instance="instance-bbbbbbbbbbbb")
    before = table_counts()
    report = make_report()
    assert client.post("/api/v1/reports", json=report).status_code == 401
    assert client.post("/api/v1/reports", json=report, headers=auth("lcd_forged")).status_code == 401
    assert client.post("/api/v1/reports", json=report, headers={"Authorization": "Basic eDp5"}).status_code == 401
    # Another device's token: a device submits only its own reports.
    assert client.post("/api/v1/reports", json=report, headers=auth(other)).status_code == 403
    assert app.state.store.revoke_token(token)
    assert client.post("/api/v1/reports", json=report, headers=auth(token)).status_code == 401
    assert table_counts() == before
    assert client.get("/healthz").json() == {"status": "ok"}


def test_report_id_of_another_device_conflicts(client, table_counts):
    one = enroll(client)
    two = enroll(client, device_id="dev-2", hostname="laptop-2", instance="instance-bbbbbbbbbbbb")
    report = make_report()
    assert client.post("/api/v1/reports", json=report, headers=auth(one)).status_code == 201
    before = table_counts()
    stolen = make_report(device_id="dev-2", hostname="laptop-2", report_id=report["report_id"])
    assert client.post("/api/v1/reports", json=stolen, headers=auth(two)).status_code == 409
    assert table_counts() == before


def test_device_reenrolls_with_its_current_token(client):
    old = enroll(client)
    new = enroll(client, token=old)  # re-enrollment with the current token replaces it
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(old)).status_code == 401
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(new)).status_code == 201


def test_clone_is_detected_not_merged(client, app):
    token = enroll(client, instance="instance-original-0001")
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(token)).status_code == 201
    clone = client.post("/api/v1/enroll", json={
        "secret": SECRET, "instance": "instance-clone-000002",
        "device": {"id": "dev-1", "hostname": "laptop-1", "os": "linux", "os_version": "Debian 12"}})
    assert clone.status_code == 409
    # The original keeps working; the fleet view counts the clone attempt.
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(token)).status_code == 201
    summary = client.get("/api/v1/fleet/summary", headers=auth(analyst(app))).json()
    assert summary["clone_events"] == 1 and summary["devices"] == 1


def test_out_of_order_reports_keep_newest_as_latest(client, app):
    token = enroll(client)
    newer = make_report(verdict="leak", findings=[leak_finding()], started=days_ago(2))
    older = make_report(started=days_ago(3))
    for report in (newer, older):
        assert client.post("/api/v1/reports", json=report, headers=auth(token)).status_code == 201
    device = client.get("/api/v1/devices/dev-1", headers=auth(analyst(app))).json()
    assert device["last_report_id"] == newer["report_id"] and device["verdict"] == "leak"
    assert len(device["history"]) == 2


def test_findings_filters_summary_and_export(client, app):
    one = enroll(client)
    two = enroll(client, device_id="dev-2", hostname="laptop-2", instance="instance-bbbbbbbbbbbb")
    reports = [
        (one, make_report(verdict="leak", findings=[leak_finding()], started=days_ago(3))),
        (two, make_report(device_id="dev-2", hostname="laptop-2", verdict="leak", probe="routes",
                          findings=[leak_finding("routes.default-route-outside-tunnel")],
                          started=days_ago(2))),
        (one, make_report(probe="reconnect", started=days_ago(1), verdict="warn",
                          findings=[leak_finding("reconnect.slow-recovery", outage_s=42.5)],
                          agent={"spool_depth": 3, "dropped": 1, "last_upload": None,
                                 "last_error": "connection refused"})),
    ]
    for token, report in reports:
        assert client.post("/api/v1/reports", json=report, headers=auth(token)).status_code == 201
    reader = auth(analyst(app))
    by_probe = client.get("/api/v1/findings", params={"probe": "routes"}, headers=reader).json()
    assert [f["finding_id"] for f in by_probe] == ["routes.default-route-outside-tunnel"]
    by_id = client.get("/api/v1/findings", params={"finding_id": "dns.resolver-outside-tunnel"},
                       headers=reader).json()
    assert [f["device_id"] for f in by_id] == ["dev-1"]
    ranged = client.get("/api/v1/findings", params={"since": days_ago(2).replace("10:", "00:"),
                                                    "until": days_ago(1).replace("10:", "00:")},
                        headers=reader).json()
    assert [f["device_id"] for f in ranged] == ["dev-2"]
    assert client.get("/api/v1/findings", params={"since": "yesterday"}, headers=reader).status_code == 422

    summary = client.get("/api/v1/fleet/summary", params={"days": 366}, headers=reader).json()
    assert summary["devices_per_verdict"] == {"leak": 1, "warn": 1}
    assert summary["devices_per_os"] == {"linux": 2}
    assert {f["finding_id"] for f in summary["devices_per_finding"]} == {
        "routes.default-route-outside-tunnel", "reconnect.slow-recovery"}
    assert [d["day"] for d in summary["trend"]] == [days_ago(n)[:10] for n in (3, 2, 1)]
    assert summary["slowest_reconnects"][0]["reconnect_s"] == 42.5
    # The newest report is a day old: both devices are stale (none for 2 intervals).
    assert summary["stale_devices"] == 2
    device = client.get("/api/v1/devices/dev-1", headers=reader).json()
    assert device["agent"] == {"spool_depth": 3, "dropped": 1, "last_upload": None,
                               "last_error": "connection refused"}
    assert device["stale"] is True

    text = client.get("/api/v1/export", params={"format": "csv"}, headers=reader).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["report_id"] for r in rows] == [r["report_id"] for _, r in reports]
    lines = client.get("/api/v1/export", params={"format": "json"}, headers=reader).text.splitlines()
    assert [json.loads(line)["verdict"] for line in lines] == ["leak", "leak", "warn"]


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings

    app = create_app(Settings(db=str(tmp_path / "c.db"), enroll_secret=SECRET, rate_limit=3,
                              rate_window_s=3600))
    with TestClient(app) as client:
        token = enroll(client)
        codes = [client.post("/api/v1/reports", json=make_report(), headers=auth(token)) for _ in range(4)]
        assert [r.status_code for r in codes] == [201, 201, 201, 429]
        assert 1 <= int(codes[-1].headers["Retry-After"]) <= 3600
        summary = client.get("/api/v1/fleet/summary", params={"days": 366}, headers=auth(analyst(app))).json()
        assert sum(v for d in summary["trend"] for k, v in d.items() if k != "day") == 3


def test_health_metrics_and_openapi(client):
    token = enroll(client)
    client.post("/api/v1/reports", json=make_report(), headers=auth(token))
    client.post("/api/v1/reports", content=b"{", headers=auth(token))
    assert client.get("/healthz").json() == {"status": "ok"}
    metrics = client.get("/metrics").text
    assert 'leakcheck_submissions_total{outcome="stored"} 1' in metrics
    assert 'leakcheck_submissions_total{outcome="rejected_invalid"} 1' in metrics
    assert "leakcheck_reports 1" in metrics
    spec = client.get("/openapi.json").json()
    assert "/api/v1/reports" in spec["paths"] and "/api/v1/fleet/summary" in spec["paths"]


def test_migrations_are_idempotent_and_versioned(settings):
    from sqlalchemy import text

    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import MIGRATIONS, migrate

    engine = make_engine(settings.url)
    try:
        assert migrate(engine) == len(MIGRATIONS)
        assert migrate(engine) == len(MIGRATIONS)
        with engine.connect() as conn:
            versions = [r[0] for r in conn.execute(text("SELECT version FROM schema_version ORDER BY 1"))]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
    finally:
        engine.dispose()
