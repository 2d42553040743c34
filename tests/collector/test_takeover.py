"""Issue 9, defect 4: a quiet device's identity could be taken over by
anyone holding the fleet secret (after twice the device interval a new
enrollment was accepted and the real token revoked). Now re-enrollment
needs the device's current token or an admin's approval, and refused
attempts show in the fleet views; both databases."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import update

from tests.collector.conftest import SECRET, analyst, auth, enroll, make_report

THIEF = {"secret": SECRET, "instance": "instance-thief-000001",
         "device": {"id": "dev-1", "hostname": "laptop-1", "os": "linux", "os_version": "Debian 12"}}


def _go_quiet(app) -> None:  # type: ignore[no-untyped-def]
    """The device last reported long ago (beyond any clone grace)."""
    from leakcheck.collector.schema import devices
    with app.state.store.engine.begin() as conn:
        conn.execute(update(devices).values(last_seen=1.0))


def test_a_quiet_device_cannot_be_taken_over_with_the_fleet_secret(client, app):
    real = enroll(client, instance="instance-original-0001")
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(real)).status_code == 201
    _go_quiet(app)
    taken = client.post("/api/v1/enroll", json=THIEF)
    assert taken.status_code == 409, taken.text
    assert "current token" in taken.json()["detail"]
    # The same installation without its token is refused too (a copied instance id proves nothing).
    assert client.post("/api/v1/enroll", json={**THIEF, "instance": "instance-original-0001"}).status_code == 409
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(real)).status_code == 201

    reader = auth(analyst(app))
    view = client.get("/api/v1/devices/dev-1", headers=reader).json()
    assert [r["reason"] for r in view["refused_enrollments"]] == ["unapproved", "unapproved"]
    assert view["refused_enrollments"][-1]["instance"] == "instance-thief-000001"
    assert client.get("/api/v1/fleet/summary", headers=reader).json()["clone_events"] == 2

    # With its current token the device re-enrolls (token rotated) ...
    rotated = enroll(client, instance="instance-original-0001", token=real)
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(real)).status_code == 401
    assert client.post("/api/v1/reports", json=make_report(), headers=auth(rotated)).status_code == 201


def test_an_admin_approves_a_new_enrollment_by_revoking_the_device(client, app, settings):
    enroll(client, instance="instance-original-0001")
    _go_quiet(app)
    assert client.post("/api/v1/enroll", json=THIEF).status_code == 409
    out = subprocess.run([sys.executable, "-m", "leakcheck", "collector", "token", "revoke-device", "dev-1",
                          "--db", settings.db], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    replaced = client.post("/api/v1/enroll", json=THIEF)
    assert replaced.status_code == 201
    assert client.post("/api/v1/reports", json=make_report(),
                       headers=auth(replaced.json()["token"])).status_code == 201
