"""Issue 13, roles: analyst tokens read, admin tokens also administer
(tokens, re-enrollment approvals) and read the audit log, which records
every admin action (who, what, when) from the API and the command line."""

from __future__ import annotations

import json

from tests.collector.conftest import auth, enroll


def _tokens(app) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    store = app.state.store
    return (auth(store.create_token("analyst", None, "ann")), auth(store.create_token("admin", None, "ada")))


def test_analysts_read_admins_also_administer(client, app):
    enroll(client)
    analyst, admin = _tokens(app)
    for headers in (analyst, admin):
        assert client.get("/api/v1/devices", headers=headers).status_code == 200
    device = auth(enroll(client, device_id="dev-2", hostname="h2", instance="instance-bbbbbbbbbbbb"))
    for headers, expected in ((analyst, 403), (device, 403), ({}, 401)):
        assert client.get("/api/v1/admin/tokens", headers=headers).status_code == expected
        assert client.get("/api/v1/admin/audit", headers=headers).status_code == expected
        assert client.post("/api/v1/admin/tokens", json={"role": "admin"}, headers=headers).status_code == expected
        assert client.post("/api/v1/admin/devices/dev-1/approve-enrollment", headers=headers).status_code == expected
    assert client.get("/api/v1/admin/audit", headers=admin).json() == []  # refusals changed nothing

    made = client.post("/api/v1/admin/tokens", json={"role": "analyst", "label": "soc-2"}, headers=admin)
    assert made.status_code == 201 and made.json()["token"].startswith("lca_")
    new_id = next(t["id"] for t in client.get("/api/v1/admin/tokens", headers=admin).json() if t["label"] == "soc-2")
    assert client.get("/api/v1/fleet/summary", headers=auth(made.json()["token"])).status_code == 200
    assert client.delete(f"/api/v1/admin/tokens/{new_id}", headers=admin).status_code == 200
    assert client.get("/api/v1/fleet/summary", headers=auth(made.json()["token"])).status_code == 401
    assert client.delete(f"/api/v1/admin/tokens/{new_id}", headers=admin).status_code == 404
    assert client.post("/api/v1/admin/devices/dev-1/approve-enrollment", headers=admin).json() == {"revoked": 1}

    log = client.get("/api/v1/admin/audit", headers=admin).json()
    assert [e["action"] for e in log] == ["enrollment.approve", "token.revoke", "token.create"]
    admin_id = next(t["id"] for t in client.get("/api/v1/admin/tokens", headers=admin).json() if t["label"] == "ada")
    assert {e["actor"] for e in log} == {f"token {admin_id} (ada)"}
    assert log[0]["detail"] == {"device_id": "dev-1", "revoked": 1} and log[2]["detail"]["label"] == "soc-2"
    assert all(e["at"].endswith("Z") for e in log)
    first = client.get("/api/v1/admin/audit", params={"limit": 2}, headers=admin)
    rest = client.get(first.headers["link"].split(">")[0][1:], headers=admin).json()
    assert [e["id"] for e in first.json() + rest] == [e["id"] for e in log]


def test_admin_signs_in_to_the_web_page(client, app):
    _, admin = _tokens(app)
    response = client.post("/login", data={"token": admin["Authorization"][7:]},
                           headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert client.get("/").status_code == 200


def test_cli_actions_are_audited_and_readable(db, capsys):
    from leakcheck.cli import main

    assert main(["collector", "token", "create", "--db", db, "--role", "admin", "--label", "boss"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("lca_")
    assert main(["collector", "token", "revoke", "--db", db, "--label", "boss"]) == 0
    capsys.readouterr()
    assert main(["collector", "audit", "--db", db, "--json"]) == 0
    log = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in log] == ["token.revoke", "token.create"]
    assert all(e["actor"].startswith("cli:") for e in log)
    assert log[1]["detail"] == {"label": "boss", "role": "admin"}
