"""Issue 9, defect 7 and point 8: token administration by id and label,
web sessions instead of the raw token in the cookie, the Origin check, the
/enroll rate limit, a /healthz that fails when the database cannot be
written, 401/403 in the OpenAPI document, per-device storage budget, and
no secret in the workers' environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from sqlalchemy import text

from tests.collector.conftest import SECRET, analyst, auth, enroll, leak_finding, make_report


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leakcheck", "collector", *args], capture_output=True, text=True)


def test_token_list_create_and_revoke_by_value_id_and_label(settings):
    db = settings.db
    alice = cli("token", "create", "--db", db, "--label", "alice").stdout.strip()
    bob = cli("token", "--db", db, "create", "--label", "bob").stdout.strip()  # --db before the verb too
    carol = cli("token", "create", "--label", "carol", "--db", db).stdout.strip()
    assert all(t.startswith("lca_") for t in (alice, bob, carol))
    listed = json.loads(cli("token", "list", "--db", db, "--json").stdout)
    assert [t["label"] for t in listed] == ["alice", "bob", "carol"]
    assert not any(alice in json.dumps(t) for t in listed)  # ids and labels, never values
    # The argument order the issue names: `token revoke --db DB TOKEN`.
    revoked = cli("token", "revoke", "--db", db, alice)
    assert revoked.returncode == 0, revoked.stderr
    by_id = cli("token", "revoke", "--db", db, "--id", str(listed[1]["id"]))
    assert by_id.returncode == 0, by_id.stderr
    by_label = cli("token", "revoke", "--label", "carol", "--db", db)
    assert by_label.returncode == 0 and "revoked 1 token(s)" in by_label.stderr
    assert json.loads(cli("token", "list", "--db", db, "--json").stdout) == []
    everything = json.loads(cli("token", "list", "--db", db, "--json", "--all").stdout)
    assert all(t["revoked_at"] for t in everything) and len(everything) == 3
    assert cli("token", "revoke", "--db", db, "--label", "nobody").returncode == 1
    assert cli("token", "revoke", "--db", db).returncode != 0  # nothing named: a usage error


def _sign_in(client, token: str, origin: str | None = "http://testserver"):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if origin is not None:
        headers["Origin"] = origin
    return client.post("/login", content=f"token={token}", headers=headers, follow_redirects=False)


def test_the_cookie_holds_a_session_not_the_token_and_revoking_ends_it(client, app):
    token = app.state.store.create_token("analyst", None, "dora")
    signed = _sign_in(client, token)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = client.cookies.get("leakcheck_session")
    assert cookie and token not in cookie and token not in signed.headers["set-cookie"]
    assert client.get("/", follow_redirects=False).status_code == 200
    assert client.get("/api/v1/devices").status_code == 200  # the session reads the API too
    assert app.state.store.revoke_tokens(label="dora") == 1
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/v1/devices").status_code == 401


def test_cross_origin_sign_in_and_sign_out_are_refused(client, app):
    token = app.state.store.create_token("analyst", None, "eve")
    for origin in ("http://evil.example", "null", None):
        answer = _sign_in(client, token, origin)
        assert answer.status_code == 403, origin
        assert "set-cookie" not in answer.headers
    assert _sign_in(client, token).status_code == 303
    assert client.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200  # still signed in
    out = client.post("/logout", headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_enroll_refuses_a_flood_of_wrong_secrets(client, app):
    body = {"secret": "wrong-secret-0000000000", "instance": "instance-guess-000001",
            "device": {"id": "dev-g", "hostname": "g", "os": "linux", "os_version": "x"}}
    codes = [client.post("/api/v1/enroll", json=body).status_code for _ in range(30)]
    limit = app.state.settings.enroll_failures_per_minute
    assert codes[:limit] == [403] * limit and set(codes[limit:]) == {429}
    flooded = client.post("/api/v1/enroll", json=body)
    assert 1 <= int(flooded.headers["retry-after"]) <= 60


def test_openapi_lists_401_and_403_for_analyst_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/devices", "/api/v1/devices/{device_id}", "/api/v1/findings", "/api/v1/fleet/summary",
                 "/api/v1/export"):
        responses = paths[path]["get"]["responses"]
        assert {"401", "403"} <= set(responses), path


def test_storage_budget_per_report_and_per_day(tmp_path):
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings
    from leakcheck.report import Contract

    app = create_app(Settings(db=str(tmp_path / "b.sqlite3"), enroll_secret=SECRET, rate_limit=1000,
                              device_daily_bytes=60_000))
    with TestClient(app) as client:
        token = enroll(client)
        # Per report: one finding's evidence over the contract's cap is refused whole.
        big = make_report(verdict="leak", findings=[leak_finding(blob="x" * (Contract.EVIDENCE_BYTES + 10))])
        assert client.post("/api/v1/reports", json=big, headers=auth(token)).status_code == 422
        # Per day: ~10 kB reports until the day's budget is spent.
        codes = []
        for _ in range(8):
            doc = make_report(verdict="leak", findings=[leak_finding(blob="y" * 10_000)])
            answer = client.post("/api/v1/reports", json=doc, headers=auth(token))
            codes.append(answer.status_code)
        assert codes[:5] == [201] * 5 and codes[-1] == 429, codes
        assert 0 < int(answer.headers["retry-after"]) <= 86400
        assert "budget" in answer.json()["detail"]
    app.state.store.engine.dispose()


def test_healthz_fails_when_sqlite_cannot_write(tmp_path):
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings

    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        app = create_app(Settings(db=str(disk / "c.sqlite3"), enroll_secret=SECRET))
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            with open(disk / "filler", "wb") as filler:  # the disk is full
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
                except OSError:
                    pass
            answers = [client.get("/healthz") for _ in range(3)]
            assert all(a.status_code == 503 for a in answers), [a.status_code for a in answers]
            assert answers[0].json()["status"] == "error"
        app.state.store.engine.dispose()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_healthz_fails_when_postgresql_cannot_write(tmp_path):
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.settings import Settings, database_url
    from tests.collector.conftest import PG_URL, reset_postgres

    reset_postgres(PG_URL)
    admin = make_engine(database_url(PG_URL))
    name = PG_URL.rsplit("/", 1)[1]
    app = create_app(Settings(db=PG_URL, enroll_secret=SECRET))
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            with admin.begin() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
            app.state.store.engine.dispose()  # new connections: read-only
            assert client.get("/healthz").status_code == 503
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
        admin.dispose()
        app.state.store.engine.dispose()


def test_no_secret_in_the_workers_environment(tmp_path):
    from tests.agent.conftest import CollectorProcess

    server = CollectorProcess(tmp_path, extra=("--workers", "2"))
    server.start()
    try:
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == server.proc.pid]
            time.sleep(0.2)
        assert len(workers) >= 2, workers
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        for pid in [server.proc.pid, *workers]:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert SECRET.encode() not in environ, pid
            assert b"LEAKCHECK_COLLECTOR_SETTINGS_FILE=" in environ or pid == server.proc.pid
        # ... and enrollment still works in the workers (they read the secret's file).
        enrolled = requests.post(server.url + "/api/v1/enroll", timeout=10, json={
            "secret": SECRET, "instance": "instance-env-0000001",
            "device": {"id": "dev-env", "hostname": "env", "os": "linux", "os_version": "x"}})
        assert enrolled.status_code == 201
    finally:
        server.stop()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
