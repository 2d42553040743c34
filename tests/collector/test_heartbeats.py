"""Issue 13: store changes, not repeats (both databases).

A report that repeats its device's state (verdict, tunnel, probe statuses,
findings with the evidence that matters) is a heartbeat: acknowledged,
idempotent on report_id, counted, and it moves the device's last-seen
fields, but adds no report or finding rows. A change is a full row.
Retention deletes only rows older than its cutoff, never a device's
current state report; on PostgreSQL day partitions are made ahead and
dropped whole."""

from __future__ import annotations

import time

from sqlalchemy import text

from tests.collector.conftest import auth, days_ago, enroll, leak_finding, make_report


def _post(client, token, doc):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/reports", json=doc, headers=auth(token))


def _hours_ago(hours: float) -> str:
    from datetime import datetime, timedelta, timezone
    when = datetime.now(timezone.utc) - timedelta(hours=hours)
    return when.replace(microsecond=0).isoformat().replace("+00:00", ".000Z")


def test_an_unchanged_report_is_a_heartbeat_and_a_changed_one_a_full_row(client, app, table_counts):
    token = enroll(client)
    store = app.state.store
    first = make_report(verdict="leak", findings=[leak_finding()], started=_hours_ago(3))
    assert _post(client, token, first).status_code == 201
    before = table_counts()

    # Same state; only a measurement in the evidence and the wording differ.
    same = make_report(verdict="leak", started=_hours_ago(2), findings=[
        dict(leak_finding(resolver="192.0.2.53", waited_s=3.5), summary="Reworded.")])
    answer = _post(client, token, same)
    assert answer.status_code == 201 and answer.json() == {"report_id": same["report_id"], "stored": True}
    after = table_counts()
    assert after["reports"] == before["reports"] and after["findings"] == before["findings"]
    assert after["heartbeats"] == before["heartbeats"] + 1
    # Idempotent on report_id: the heartbeat again is "already stored".
    again = _post(client, token, same)
    assert again.status_code == 200 and again.json()["stored"] is False
    assert table_counts() == after

    # Staleness follows the heartbeat: 2 h ago is fresh for a 1.5 h interval (3 h ago alone would not be).
    device = store.device("dev-1", time.time(), 5400)
    assert device["last_report_id"] == same["report_id"] and device["heartbeats"] == 1
    assert device["state_report_id"] == first["report_id"]
    assert device["last_report_at"] == same["started_at"] and not device["stale"]
    [current] = device["current_findings"]
    assert (current["first_seen"], current["last_seen"]) == (first["started_at"], same["started_at"])
    # The latest evidence is the full report that began the state.
    assert client.get("/api/v1/devices/dev-1/latest", headers=auth(store.create_token("analyst"))
                      ).json()["report_id"] == first["report_id"]
    # Every report counts in the daily trend, heartbeats too.
    assert sum(v for d in store.summary(time.time(), 900, 30)["trend"] for k, v in d.items() if k != "day") == 2

    # Evidence that matters changed: a full row, and a new state.
    moved = make_report(verdict="leak", findings=[leak_finding(resolver="198.51.100.7")], started=_hours_ago(1))
    assert _post(client, token, moved).status_code == 201
    changed = table_counts()
    assert changed["reports"] == after["reports"] + 1 and changed["findings"] == after["findings"] + 1
    assert changed["heartbeats"] == after["heartbeats"]
    device = store.device("dev-1", time.time(), 900)
    assert device["heartbeats"] == 0 and device["state_report_id"] == moved["report_id"]
    # Same finding id still there: its stretch began with the first report.
    assert device["current_findings"][0]["first_seen"] == first["started_at"]

    # The leak resolved: a full row; the finding leaves the current findings.
    fixed = make_report(started=_hours_ago(0.5))
    assert _post(client, token, fixed).status_code == 201
    device = store.device("dev-1", time.time(), 900)
    assert device["verdict"] == "pass" and device["current_findings"] == []
    assert table_counts()["reports"] == changed["reports"] + 1


def test_an_older_report_repeating_the_state_is_a_full_row(client, app, table_counts):
    """Only a newer report can be a heartbeat of the latest state: one
    arriving late (spooled) is kept whole and does not move the device."""
    token = enroll(client)
    latest = make_report(started=_hours_ago(1))
    assert _post(client, token, latest).status_code == 201
    before = table_counts()
    late = make_report(started=days_ago(2))
    assert _post(client, token, late).status_code == 201
    assert table_counts()["reports"] == before["reports"] + 1
    assert app.state.store.device("dev-1", time.time(), 900)["last_report_id"] == latest["report_id"]


def test_a_network_change_or_manual_run_is_kept_whole_even_when_it_repeats(client, app, table_counts):
    token = enroll(client)
    assert _post(client, token, make_report(started=_hours_ago(3))).status_code == 201
    before = table_counts()
    for hours, trigger in ((2, "network-change"), (1.5, "manual")):
        assert _post(client, token, make_report(started=_hours_ago(hours), trigger=trigger)).status_code == 201
    after = table_counts()
    assert (after["reports"] - before["reports"], after["heartbeats"]) == (2, before["heartbeats"])
    # The scheduled run after them repeats the state: a heartbeat again.
    assert _post(client, token, make_report(started=_hours_ago(1))).status_code == 201
    assert table_counts()["heartbeats"] == before["heartbeats"] + 1


def test_a_batch_of_repeats_from_one_device(client, app, table_counts):
    """Group commit: a device's reports in one batch are compared in time order."""
    from leakcheck.collector import security
    from leakcheck.collector.contract import ReportIn
    from leakcheck.collector.store import Pending

    token = enroll(client)
    docs = [make_report(started=_hours_ago(5 - k)) for k in range(4)]
    batch = [Pending(ReportIn.model_validate(d), "{}", security.token_hash(token)) for d in reversed(docs)]
    before = table_counts()
    assert [o.status for o in app.state.store.submit_batch(batch, 1000, 60)] == [201] * 4
    after = table_counts()
    assert (after["reports"] - before["reports"], after["heartbeats"] - before["heartbeats"]) == (1, 3)
    device = app.state.store.device("dev-1", time.time(), 900)
    assert device["state_report_id"] == docs[0]["report_id"] and device["last_report_id"] == docs[-1]["report_id"]
    assert device["heartbeats"] == 3


def test_retention_deletes_only_old_rows_and_keeps_the_state_report(client, app, table_counts):
    from leakcheck.collector.maintenance import Maintenance

    one = enroll(client)
    two = enroll(client, device_id="dev-2", hostname="laptop-2", instance="instance-bbbbbbbbbbbb")
    # dev-1: a leak 20 days ago (its current state), repeated 19 and 1 days ago.
    state = make_report(verdict="leak", findings=[leak_finding()], started=days_ago(20))
    for doc in (state, make_report(verdict="leak", findings=[leak_finding()], started=days_ago(19)),
                make_report(verdict="leak", findings=[leak_finding()], started=days_ago(1))):
        assert _post(client, one, doc).status_code == 201
    # dev-2: an old leak, then a recent change to pass.
    old = make_report(device_id="dev-2", hostname="laptop-2", verdict="leak", findings=[leak_finding()],
                      started=days_ago(15))
    recent = make_report(device_id="dev-2", hostname="laptop-2", started=days_ago(2))
    for doc in (old, recent):
        assert _post(client, two, doc).status_code == 201
    before = table_counts()
    assert (before["reports"], before["heartbeats"], before["findings"]) == (3, 2, 2)

    deleted = Maintenance(app.state.store, retention_days=10, interval_s=3600).run_once()
    after = table_counts()
    with app.state.store.engine.connect() as conn:
        kept = set(conn.execute(text("SELECT report_id FROM reports")).scalars())
        beats = conn.execute(text("SELECT count(*) FROM heartbeats")).scalar()
    # dev-2's 15-day-old leak went (with its finding); dev-1's state report stays, however old.
    assert kept == {state["report_id"], recent["report_id"]}
    assert after["findings"] == 1 and beats == 1  # the 19-day-old heartbeat went, yesterday's stayed
    assert deleted == 3
    # Nothing else changed: devices and their current findings are untouched.
    assert after["devices"] == before["devices"] and after["current_findings"] == before["current_findings"]
    # A second round finds nothing to delete.
    assert Maintenance(app.state.store, retention_days=10, interval_s=3600).run_once() == 0


def test_retention_in_small_batches(client, app):
    token = enroll(client)
    for n in range(7):
        # Alternating verdicts: every report is a change, a full row.
        doc = make_report(started=_hours_ago(24 * 30 + n)) if n % 2 else make_report(
            verdict="leak", findings=[leak_finding()], started=_hours_ago(24 * 30 + n))
        assert _post(client, token, doc).status_code == 201
    latest = make_report(started=_hours_ago(1))
    assert _post(client, token, latest).status_code == 201
    deleted = app.state.store.purge_before(time.time() - 10 * 86400, batch=2)
    with app.state.store.engine.connect() as conn:
        assert conn.execute(text("SELECT report_id FROM reports")).scalars().all() == [latest["report_id"]]
    assert deleted == 7 + 4  # reports and the leaks' findings


def test_postgres_day_partitions_are_made_ahead_and_dropped_whole(client, app, db):
    """PostgreSQL only by nature (SQLite has no partitions): run on both so the
    SQLite side proves ensure_partitions is a no-op there."""
    store = app.state.store
    now = time.time()
    token = enroll(client)
    # A report 40 days old lands in DEFAULT (no partition for its day yet) ...
    old = make_report(started=_hours_ago(40 * 24))
    assert _post(client, token, old).status_code == 201
    made = store.ensure_partitions(now - 40 * 86400, days_ahead=0)
    if store.engine.dialect.name != "postgresql":
        assert made == []
        return
    day = time.strftime("%Y%m%d", time.gmtime(now - 40 * 86400))
    assert made == [f"reports_d{day}", f"heartbeats_d{day}"]
    with store.engine.connect() as conn:
        parts = set(conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                      "WHERE i.inhparent = 'reports'::regclass")).scalars())
        # ... and moves into the day's partition when that is made.
        assert conn.execute(text("SELECT count(*) FROM reports_default")).scalar() == 0
    today = time.strftime("%Y%m%d", time.gmtime(now))
    assert {f"reports_d{today}", f"reports_d{day}", "reports_default"} <= parts
    newer = make_report(verdict="leak", findings=[leak_finding()], started=_hours_ago(1))
    assert _post(client, token, newer).status_code == 201
    with store.engine.connect() as conn:
        assert conn.execute(text(f"SELECT report_id FROM reports_d{day}")).scalars().all() == [old["report_id"]]
        assert conn.execute(text(f"SELECT report_id FROM reports_d{today}")).scalars().all() == [newer["report_id"]]
    assert store.purge_before(now - 10 * 86400) == 1
    with store.engine.connect() as conn:
        gone = conn.execute(text(f"SELECT to_regclass('reports_d{day}')")).scalar()
        assert gone is None
        assert conn.execute(text(f"SELECT to_regclass('reports_d{today}')")).scalar() is not None
        assert conn.execute(text("SELECT report_id FROM reports")).scalars().all() == [newer["report_id"]]



def test_the_retention_setting_purges_in_the_background(client, app, db):
    """`collector serve --retention-days N` -> Settings.retention_days -> a
    maintenance thread started with the app; no request needed."""
    import argparse

    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings
    from leakcheck.commands import collector as command
    from tests.collector.conftest import SECRET

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collector", "serve", "--db", db, "--retention-days", "10"])
    assert args.retention_days == 10

    token = enroll(client)
    old = make_report(started=days_ago(30))
    recent = make_report(verdict="leak", findings=[leak_finding()], started=days_ago(1))
    for doc in (old, recent):
        assert _post(client, token, doc).status_code == 201
    retaining = create_app(Settings(db=db, enroll_secret=SECRET, retention_days=args.retention_days))
    try:
        with TestClient(retaining):
            deadline = time.time() + 10
            while time.time() < deadline:
                with retaining.state.store.engine.connect() as conn:
                    ids = set(conn.execute(text("SELECT report_id FROM reports")).scalars())
                if old["report_id"] not in ids:
                    break
                time.sleep(0.05)
            assert ids == {recent["report_id"]}
    finally:
        retaining.state.store.engine.dispose()
