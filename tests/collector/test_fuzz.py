"""Fuzz every operation of the API from its own OpenAPI document
(schemathesis + hypothesis), with real device and analyst tokens, over a
real SQLite file and a real PostgreSQL. No input may cause a server error or break the service,
and nothing a rejected request carried may be stored."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.collector.conftest import SECRET


@pytest.fixture
def api_schema(db):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings

    app = create_app(Settings(db=db, enroll_secret=SECRET, rate_limit=100000))
    with TestClient(app) as client:
        enrolled = client.post("/api/v1/enroll", json={
            "secret": SECRET, "instance": "instance-fuzz-00000001",
            "device": {"id": "dev-fuzz", "hostname": "fuzz", "os": "linux", "os_version": "x"}})
        app.state.fuzz_tokens = {"device": enrolled.json()["token"],
                                 "analyst": app.state.store.create_token("analyst", None, "fuzz")}
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails(case):  # type: ignore[no-untyped-def]
    app = case.operation.schema.app
    kind = "device" if case.method == "POST" and case.path in ("/api/v1/reports", "/api/v1/flows") else "analyst"
    headers = {"Authorization": f"Bearer {app.state.fuzz_tokens[kind]}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if case.path == "/api/v1/reports" and response.status_code >= 400:
        assert app.state.store.counts()["reports"] == 0
