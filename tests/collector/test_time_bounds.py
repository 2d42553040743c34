"""Issue 9, defect 1: one report dated in the future froze its device (kept
it "pass", never stale, its real leak reports hidden). Now a start beyond
the clock-skew allowance is stored as received, the device is flagged, and
the next honest report is the device's latest; both databases."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from leakcheck.report import rfc3339
from tests.collector.conftest import analyst, auth, enroll, leak_finding, make_report


def _at(moment: datetime) -> str:
    return rfc3339(moment)


def test_a_future_dated_report_cannot_pin_its_device(client, app):
    token = enroll(client)
    reader = auth(analyst(app))
    future = make_report(verdict="pass", started="2099-01-01T10:00:00.000Z")
    assert client.post("/api/v1/reports", json=future, headers=auth(token)).status_code == 201
    view = client.get("/api/v1/devices/dev-1", headers=reader).json()
    assert view["last_report_id"] == future["report_id"]
    assert view["clock_skew_s"] > 365 * 86400  # flagged: this device's clock is wrong
    assert view["stale"] is False

    later = datetime.now(timezone.utc) + timedelta(seconds=1)  # the device's next run
    leak = make_report(verdict="leak", findings=[leak_finding()], started=_at(later),
                       finished_at=_at(later + timedelta(seconds=1)))
    assert client.post("/api/v1/reports", json=leak, headers=auth(token)).status_code == 201
    view = client.get("/api/v1/devices/dev-1", headers=reader).json()
    assert view["last_report_id"] == leak["report_id"] and view["verdict"] == "leak"
    assert view["clock_skew_s"] is None
    assert [f["finding_id"] for f in view["current_findings"]] == ["dns.resolver-outside-tunnel"]
    summary = client.get("/api/v1/fleet/summary", headers=reader).json()
    assert summary["devices_per_verdict"] == {"leak": 1}
    # The future report is kept (its body verbatim) but stored as received.
    history = {h["report_id"]: h["started_at"] for h in view["history"]}
    assert history[future["report_id"]] < "2099"


def test_a_start_within_the_skew_allowance_is_kept_as_claimed(client, app):
    token = enroll(client)
    soon = datetime.now(timezone.utc) + timedelta(seconds=60)
    doc = make_report(started=_at(soon), finished_at=_at(soon + timedelta(seconds=1)))
    assert client.post("/api/v1/reports", json=doc, headers=auth(token)).status_code == 201
    view = client.get("/api/v1/devices/dev-1", headers=auth(analyst(app))).json()
    assert view["last_report_at"] == _at(soon) and view["clock_skew_s"] is None
