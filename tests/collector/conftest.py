"""Collector fixtures: the app over a real SQLite file and a real PostgreSQL.

PostgreSQL comes from tests/services/postgres.sh (started by tests/run.sh);
its URL is LEAKCHECK_TEST_PG or the default below. If it cannot be reached
the PostgreSQL tests fail with the reason: they never skip.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Callable, Iterator

import pytest

PG_URL = os.environ.get("LEAKCHECK_TEST_PG", "postgresql://leakcheck:leakcheck@localhost/leakcheck_test")
SECRET = "fleet-enrollment-secret-0123456789"


def reset_postgres(url: str) -> None:
    """Drop every table so each test starts from an empty, unmigrated database."""
    from sqlalchemy import text

    from leakcheck.collector.db import make_engine
    from leakcheck.collector.settings import database_url

    engine = make_engine(database_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {url} is not usable ({exc}); start it with tests/services/postgres.sh")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return str(tmp_path / "collector.sqlite3")
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def settings(db: str):  # type: ignore[no-untyped-def]
    from leakcheck.collector.settings import Settings
    return Settings(db=db, enroll_secret=SECRET, rate_limit=1000)


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    from leakcheck.collector.app import create_app
    application = create_app(settings)
    yield application
    application.state.store.engine.dispose()


@pytest.fixture
def client(app) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient
    with TestClient(app) as c:
        yield c


def days_ago(n: int) -> str:
    """10:00:00.000 UTC, n days ago, in the report's RFC 3339 form."""
    from datetime import datetime, timedelta, timezone
    day = (datetime.now(timezone.utc) - timedelta(days=n)).date()
    return f"{day.isoformat()}T10:00:00.000Z"


def make_report(device_id: str = "dev-1", hostname: str = "laptop-1", verdict: str = "pass",
                findings: list[dict[str, Any]] | None = None, started: str | None = None,
                probe: str = "dns", agent: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    status = verdict
    started = started or days_ago(1)
    doc = {
        "schema": "leakcheck.report/1", "report_id": str(uuid.uuid4()), "agent_version": "0.1.0",
        "device": {"id": device_id, "hostname": hostname, "os": "linux", "os_version": "Debian 12"},
        "started_at": started, "finished_at": started.replace("00.000Z", "01.500Z"),
        "trigger": "schedule",
        "tunnel": {"state": "up", "kind": "wireguard", "interfaces": ["wg0"]},
        "verdict": verdict,
        "probes": [{"probe": probe, "status": status, "duration_ms": 12,
                    "findings": findings or [], "error": None}],
    }
    if agent is not None:
        doc["agent"] = agent
    doc.update(over)
    return doc


def leak_finding(fid: str = "dns.resolver-outside-tunnel", **evidence: Any) -> dict[str, Any]:
    return {"id": fid, "severity": "high", "summary": "DNS goes to the ISP resolver.",
            "evidence": evidence or {"resolver": "192.0.2.53"}, "recommendation": "Fix it.",
            "guidance": "NCSC VPN guidance: force all traffic, including DNS, through the VPN"}


def enroll(client: Any, device_id: str = "dev-1", hostname: str = "laptop-1",
           instance: str = "instance-aaaaaaaaaaaa", token: str | None = None) -> str:
    response = client.post("/api/v1/enroll", json={
        "secret": SECRET, "instance": instance,
        "device": {"id": device_id, "hostname": hostname, "os": "linux", "os_version": "Debian 12"}},
        headers=auth(token) if token else {})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def analyst(app: Any) -> str:
    return app.state.store.create_token("analyst", None, "test analyst")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def table_counts(app) -> Callable[[], dict[str, int]]:  # type: ignore[no-untyped-def]
    """Row counts of every table: 'nothing stored' is checked against these."""
    from sqlalchemy import func, select

    from leakcheck.collector.schema import metadata

    def counts() -> dict[str, int]:
        with app.state.store.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                    for t in metadata.sorted_tables if t.name not in ("schema_version",)}
    return counts


def dumps(doc: Any) -> str:
    return json.dumps(doc)
