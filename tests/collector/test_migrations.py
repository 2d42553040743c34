"""Issue 9, point 8: real migrations. A database made by the first released
schema (tests/collector/released_schema_v2.py, the create_all code deployed
collectors ran) is upgraded by the frozen DDL steps and keeps every row; a
fresh database migrated step by step has exactly the tables and columns
that schema.py describes; both databases."""

from __future__ import annotations

import time

from sqlalchemy import inspect, select, text

from tests.collector import released_schema_v2 as released
from tests.collector.conftest import auth, make_report


def _engine(db: str):  # type: ignore[no-untyped-def]
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.settings import database_url
    return make_engine(database_url(db))


def test_a_released_database_upgrades_and_keeps_its_rows(db):
    from fastapi.testclient import TestClient

    from leakcheck.collector import security
    from leakcheck.collector.app import create_app
    from leakcheck.collector.schema import MIGRATIONS, migrate
    from leakcheck.collector.settings import Settings

    old = _engine(db)
    assert released.migrate(old) == 2
    token = "lcd_released-device-token-0123456789abcdef"
    now = time.time()
    doc = make_report()
    with old.begin() as conn:
        conn.execute(released.tokens.insert().values(token_hash=security.token_hash(token), kind="device",
                                                     device_id="dev-1", label="laptop-1", created_at=now))
        conn.execute(released.devices.insert().values(
            device_id="dev-1", hostname="laptop-1", os="linux", os_version="Debian 12", instance="i" * 20,
            enrolled_at=now, last_seen=now, last_report_id=doc["report_id"], last_started_at=now - 86400,
            last_verdict="pass", rl_window=0, rl_count=0))
        conn.execute(released.reports.insert().values(
            report_id=doc["report_id"], device_id="dev-1", received_at=now, started_at=now - 86400,
            finished_at=now - 86399, trigger="schedule", verdict="pass", tunnel_state="up",
            tunnel_kind="wireguard", agent_version="0.1.0", body='{"old": true}'))
        conn.execute(released.clone_events.insert().values(device_id="dev-9", hostname="h", instance="x" * 20,
                                                           seen_at=now))
    old.dispose()

    engine = _engine(db)
    assert migrate(engine) == len(MIGRATIONS)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version ORDER BY version")).scalars().all() == MIGRATIONS
        assert conn.execute(text("SELECT body FROM reports")).scalars().all() == ['{"old": true}']
        assert conn.execute(text("SELECT reason FROM clone_events")).scalars().all() == ["clone"]
        assert conn.execute(text("SELECT budget_bytes, clock_skew_s FROM devices")).all() == [(0, None)]
    engine.dispose()

    # The released device's token still works, and its next report is stored.
    app = create_app(Settings(db=db, enroll_secret="x" * 20))
    try:
        with TestClient(app) as client:
            response = client.post("/api/v1/reports", json=make_report(started=None), headers=auth(token))
            assert response.status_code == 201, response.text
            analyst = app.state.store.create_token("analyst", None, "after upgrade")
            devices = client.get("/api/v1/devices", headers=auth(analyst)).json()
            assert [d["device_id"] for d in devices] == ["dev-1"]
    finally:
        app.state.store.engine.dispose()


def test_fresh_migration_matches_the_table_definitions(db):
    from leakcheck.collector.schema import metadata, migrate

    engine = _engine(db)
    migrate(engine)
    found = inspect(engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in found.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in found.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= indexes, table.name
    with engine.connect() as conn:
        assert conn.execute(select(metadata.tables["health"].c.id)).scalars().all() == [1]
    engine.dispose()
