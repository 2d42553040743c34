"""Issue 13, alerts and SIEM feeds, end to end on SQLite and PostgreSQL.

The collector runs with its dispatcher thread; the receivers are real
servers on loopback (tests/collector/alert_receivers.py): a webhook HTTP
server, a syslog UDP socket, a JSON-lines file. Reports go in through the
API (or, for the 1,000-device burst, through the real group-commit path in
one transaction), and the tests wait for what arrives, as a SIEM would.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from leakcheck.collector.alerts import formats
from tests.collector.alert_receivers import (TcpSyslogReceiver, UdpReceiver, WebhookReceiver, parse_cef,
                                             parse_rfc5424, wait_for)
from tests.collector.conftest import SECRET, analyst, auth, enroll, leak_finding, make_report

HOOK_SECRET = "webhook-secret-0123456789abcdef"


def stamp(epoch: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report(device: str, leak: bool, hostname: str | None = None, **over: Any) -> dict[str, Any]:
    now = time.time()
    doc = make_report(device_id=device, hostname=hostname or f"host-{device}", verdict="leak" if leak else "pass",
                      findings=[leak_finding()] if leak else [], started=stamp(now - 2), **over)
    doc["finished_at"] = stamp(now - 1)
    return doc


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "hook.secret"
    path.write_text(HOOK_SECRET + "\n")
    return str(path)


def make_app(db: str, alerts: dict[str, Any], **over: Any):  # type: ignore[no-untyped-def]
    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings
    return create_app(Settings(db=db, enroll_secret=SECRET, rate_limit=10_000, alerts=alerts, **over))


def fast(**extra: Any) -> dict[str, Any]:
    return {"batch_interval": 0.5, "poll_interval": 0.2, "retry_max": 1, **extra}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


def signed(call) -> bool:  # type: ignore[no-untyped-def]
    return formats.verify(HOOK_SECRET, call.headers["x-leakcheck-timestamp"], call.headers["x-leakcheck-signature"],
                          call.body)


def test_a_leak_fires_one_signed_webhook_within_5s_and_its_resolution_another(db, secret_file, receiver):
    app = make_app(db, fast(webhook=[{"name": "soc", "url": receiver.url, "secret_file": secret_file}]))
    with TestClient(app) as client:
        token = enroll(client, "dev-1", "laptop-1")
        leaking = report("dev-1", leak=True, hostname="laptop-1")
        response = client.post("/api/v1/reports", json=leaking, headers=auth(token))
        assert response.status_code == 201, response.text
        stored = time.time()
        wait_for(lambda: receiver.calls, 5.0, "the leak webhook")
        first = receiver.calls[0]
        assert first.at - stored < 5.0
        assert signed(first)
        # A tampered body or an old timestamp does not verify.
        assert not formats.verify(HOOK_SECRET, first.headers["x-leakcheck-timestamp"],
                                  first.headers["x-leakcheck-signature"], first.body + b" ")
        assert not formats.verify(HOOK_SECRET, first.headers["x-leakcheck-timestamp"],
                                  first.headers["x-leakcheck-signature"], first.body, now=time.time() + 600)
        [event] = first.events
        assert event["type"] == "device-starts-leaking"
        assert event["device"] == {"id": "dev-1", "hostname": "laptop-1", "os": "linux"}
        assert event["details"]["finding_ids"] == ["dns.resolver-outside-tunnel"]
        assert event["details"]["report_id"] == leaking["report_id"]
        detail = event["details"]["findings"][0]
        assert detail["evidence"] == {"resolver": "192.0.2.53"} and detail["recommendation"] == "Fix it."
        [finding] = event["ocsf"]
        assert (finding["class_uid"], finding["type_uid"], finding["status_id"]) == (2004, 200401, 1)
        assert finding["finding_info"]["analytic"]["uid"] == "dns.resolver-outside-tunnel"

        # The same leak reported again is not news.
        assert client.post("/api/v1/reports", json=report("dev-1", leak=True, hostname="laptop-1"),
                           headers=auth(token)).status_code == 201
        response = client.post("/api/v1/reports", json=report("dev-1", leak=False, hostname="laptop-1"),
                               headers=auth(token))
        assert response.status_code == 201
        stored = time.time()
        wait_for(lambda: len(receiver.calls) >= 2, 5.0, "the resolved webhook")
        second = receiver.calls[1]
        assert second.at - stored < 5.0 and signed(second)
        [resolved] = second.events
        assert resolved["type"] == "leak-resolved"
        assert resolved["details"]["finding_ids"] == ["dns.resolver-outside-tunnel"]
        assert resolved["details"]["leaking"] == []
        assert resolved["ocsf"][0]["status_id"] == 4 and resolved["ocsf"][0]["activity_id"] == 3
        time.sleep(1.5)  # several more ticks and flushes: nothing else is sent
        assert len(receiver.calls) == 2

        # The events and the delivery log through the API.
        reader = analyst(app)
        page = client.get("/api/v1/alerts/events", headers=auth(reader)).json()
        assert [e["id"] for e in page["events"]] == [event["id"], resolved["id"]]
        assert client.get("/api/v1/alerts/deliveries", headers=auth(reader)).status_code == 403  # admins only
        admin = app.state.store.create_token("admin", None, "test admin")
        log = client.get("/api/v1/alerts/deliveries", headers=auth(admin)).json()
        assert [(d["sink"], d["ok"], d["events"], d["status"]) for d in log["deliveries"]] == [
            ("webhook:soc", True, 1, 204), ("webhook:soc", True, 1, 204)]
        assert log["backlog"] == {}
        assert client.get("/api/v1/alerts/deliveries", headers=auth(token)).status_code == 403


def _burst(app: Any, count: int) -> list[str]:
    """`count` enrolled devices, then one leak report each, stored in one
    group-commit transaction (the real write path): a fleet-wide event."""
    from leakcheck.collector import security
    from leakcheck.collector.contract import ReportIn
    from leakcheck.collector.schema import devices, tokens
    from leakcheck.collector.store import Pending

    store = app.state.store
    ids = [f"burst-{n:04d}" for n in range(count)]
    now = time.time()
    keys = {d: f"lcd_burst-token-{d}-0123456789" for d in ids}
    with store.engine.begin() as conn:
        conn.execute(devices.insert(), [dict(device_id=d, hostname=f"h-{d}", os="linux", os_version="12",
                                             instance="i" * 20, enrolled_at=now, rl_window=0, rl_count=0,
                                             budget_day=0, budget_bytes=0) for d in ids])
        conn.execute(tokens.insert(), [dict(token_hash=security.token_hash(keys[d]), kind="device", device_id=d,
                                            label=d, created_at=now) for d in ids])
    batch = []
    for d in ids:
        parsed = ReportIn.model_validate(report(d, leak=True))
        batch.append(Pending(parsed, parsed.model_dump_json(by_alias=True, exclude={"agent"}),
                             security.token_hash(keys[d])))
    outcomes = store.submit_batch(batch, 10_000, 60)
    assert [o.status for o in outcomes] == [201] * count
    return ids


def test_a_thousand_devices_leaking_at_once_arrive_in_a_handful_of_batched_calls(db, secret_file, receiver):
    app = make_app(db, fast(webhook=[{"url": receiver.url, "secret_file": secret_file}], batch_interval=2.0))
    with TestClient(app):
        ids = _burst(app, 1000)
        wait_for(lambda: len(receiver.events()) >= 1000, 30.0, "1,000 leak events")
        time.sleep(2.5)  # one more batch interval: nothing further
        got = receiver.events()
        assert sorted(e["device"]["id"] for e in got) == ids  # each device once, none missing
        assert {e["type"] for e in got} == {"device-starts-leaking"}
        assert len({e["id"] for e in got}) == 1000
        assert 1 <= len(receiver.calls) <= 4, [len(c.events) for c in receiver.calls]
        assert all(signed(c) for c in receiver.calls)


def test_a_receiver_that_is_down_gets_every_event_later_none_lost_none_doubled(db, secret_file, tmp_path):
    down = WebhookReceiver()  # its port refuses connections until start()
    hooks = [{"name": "soc", "url": down.url, "secret_file": secret_file}]
    app = make_app(db, fast(webhook=hooks))
    with TestClient(app) as client:
        tokens = {d: enroll(client, d, f"host-{d}", instance=f"instance-{d}-aaaaaaaa") for d in ("a", "b", "c")}
        for d, token in tokens.items():
            response = client.post("/api/v1/reports", json=report(d, leak=True), headers=auth(token))
            assert response.status_code == 201
        alerts = app.state.alerts_store
        # State is polled: a leak fixed before the next poll is never news. Let this one be seen.
        wait_for(lambda: len(alerts.events()) == 3, 5.0, "three leak events")
        assert client.post("/api/v1/reports", json=report("a", leak=False),
                           headers=auth(tokens["a"])).status_code == 201
        wait_for(lambda: sum(not d["ok"] for d in alerts.deliveries()) >= 2, 10.0, "failed deliveries")
        failures = [d for d in alerts.deliveries() if not d["ok"]]
        assert all(d["status"] is None and "Connection refused" in d["error"] for d in failures)
        assert failures[0]["attempt"] > failures[-1]["attempt"]  # retried, backing off
    # The collector stops with the receiver still down: the outbox is durable.
    assert alerts.backlog() == {"webhook:soc": 4}
    app.state.store.engine.dispose()

    down.start()
    try:
        again = make_app(db, fast(webhook=hooks))
        with TestClient(again):
            wait_for(lambda: len(down.events()) >= 4, 15.0, "the backlog")
            time.sleep(1.5)
            got = down.events()
            assert again.state.alerts_store.backlog() == {}
        again.state.store.engine.dispose()
    finally:
        down.stop()
    recorded = [e["id"] for e in alerts.events()]
    assert sorted(e["id"] for e in got) == sorted(recorded)  # none lost, none doubled
    assert sorted((e["type"], e["device"]["id"]) for e in got) == [
        ("device-starts-leaking", "a"), ("device-starts-leaking", "b"), ("device-starts-leaking", "c"),
        ("leak-resolved", "a")]
    assert all(signed(c) for c in down.calls)


def test_syslog_rfc5424_and_cef_on_a_real_udp_socket_and_json_lines(db, tmp_path):
    plain, cef = UdpReceiver(), UdpReceiver()
    lines = tmp_path / "events.jsonl"
    app = make_app(db, fast(syslog=[{"name": "json", "address": f"udp://127.0.0.1:{plain.port}",
                                     "hostname": "collector-1"},
                                    {"name": "cef", "address": f"udp://127.0.0.1:{cef.port}", "format": "cef",
                                     "facility": "local4", "hostname": "collector-1"}],
                            jsonl={"path": str(lines)}))
    try:
        with TestClient(app) as client:
            token = enroll(client, "dev-1", "laptop-1")
            doc = report("dev-1", leak=True, hostname="laptop-1")
            assert client.post("/api/v1/reports", json=doc, headers=auth(token)).status_code == 201
            wait_for(lambda: app.state.alerts_store.events(), 5.0, "the leak event")
            assert client.post("/api/v1/reports", json=report("dev-1", leak=False, hostname="laptop-1"),
                               headers=auth(token)).status_code == 201
            got_plain = plain.drain(lambda d: len(d) >= 2)
            got_cef = cef.drain(lambda d: len(d) >= 2)
            wait_for(lambda: lines.exists() and len(lines.read_text().splitlines()) >= 2, 10, "JSON lines")
    finally:
        plain.close()
        cef.close()
    parsed = [parse_rfc5424(d) for d in got_plain]
    assert [p["msgid"] for p in parsed] == ["device-starts-leaking", "leak-resolved"]
    for p in parsed:
        assert (p["version"], p["app"], p["hostname"], p["facility"]) == (1, "leakcheck", "collector-1", 10)
        body = json.loads(p["msg"])
        assert p["sd"]["leakcheck@32473"]["id"] == body["id"]
        assert p["sd"]["leakcheck@32473"]["hostname"] == "laptop-1"
        assert datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert parsed[0]["severity"] == 3  # high -> error
    cefs = [parse_rfc5424(d) for d in got_cef]
    assert [c["facility"] for c in cefs] == [20, 20]
    started, resolved = (parse_cef(c["msg"]) for c in cefs)
    assert (started["vendor"], started["signature"], started["severity"]) == ("leakcheck", "device-starts-leaking", 8)
    assert started["ext"]["dvchost"] == "laptop-1"
    assert started["ext"]["cs1"] == "dns.resolver-outside-tunnel" and started["ext"]["cs1Label"] == "findingIds"
    assert started["ext"]["cs2"] == doc["report_id"]
    assert "laptop-1" in started["name"]
    assert resolved["signature"] == "leak-resolved"
    jsonl = [json.loads(x) for x in lines.read_text().splitlines()]
    assert [e["type"] for e in jsonl] == ["device-starts-leaking", "leak-resolved"]
    assert [e["id"] for e in jsonl] == [json.loads(p["msg"])["id"] for p in parsed]


def test_syslog_over_tcp_is_octet_counted_rfc5424(db):
    server = TcpSyslogReceiver()
    app = make_app(db, fast(syslog={"address": f"tcp://127.0.0.1:{server.port}", "format": "cef"}))
    try:
        with TestClient(app) as client:
            tokens = {d: enroll(client, d, f"host-{d}", instance=f"instance-{d}-aaaaaaaa") for d in ("a", "b")}
            for d, token in tokens.items():
                assert client.post("/api/v1/reports", json=report(d, leak=True), headers=auth(token)).status_code == 201
            wait_for(lambda: len(server.frames) >= 2, 10.0, "two syslog frames over TCP")
    finally:
        server.close()
    parsed = [parse_rfc5424(f) for f in server.frames]
    assert sorted(parse_cef(p["msg"])["ext"]["deviceExternalId"] for p in parsed) == ["a", "b"]
    assert {p["msgid"] for p in parsed} == {"device-starts-leaking"}


def test_stale_slow_reconnect_and_clone_attempt_events(db, tmp_path, capsys):
    from leakcheck.collector.alerts.dispatcher import Dispatcher
    from leakcheck.collector.alerts.store import STALE_CHECK_S

    lines = tmp_path / "events.jsonl"
    app = make_app(db, {}, device_interval_s=60)
    config = app.state.settings.__class__(db=db, alerts={"jsonl": {"path": str(lines)}, "reconnect_bound": 10,
                                                         "stale_intervals": 2}).alert_config()
    dispatcher = Dispatcher(app.state.store.engine, config, device_interval_s=60)
    with TestClient(app) as client:
        token = enroll(client, "dev-1", "laptop-1", instance="instance-first-aaaaaaaa")
        slow = report("dev-1", leak=False, probe="reconnect")
        slow["probes"][0]["findings"] = [dict(leak_finding("reconnect.slow"), severity="medium",
                                              evidence={"reconnect_s": 42.5})]
        slow["probes"][0]["status"] = "warn"
        slow["verdict"] = "warn"
        assert client.post("/api/v1/reports", json=slow, headers=auth(token)).status_code == 201
        # A second installation claims the device id: refused, recorded, alerted.
        response = client.post("/api/v1/enroll", json={
            "secret": SECRET, "instance": "instance-second-bbbbbbb",
            "device": {"id": "dev-1", "hostname": "intruder", "os": "linux", "os_version": "12"}})
        assert response.status_code == 409
        # An old device: its latest report is 10 minutes old (stale after 2 x 60 s).
        old = enroll(client, "dev-old", "old-laptop", instance="instance-old-aaaaaaaaa")
        stale_doc = report("dev-old", leak=False)
        stale_doc["started_at"], stale_doc["finished_at"] = stamp(time.time() - 600), stamp(time.time() - 599)
        assert client.post("/api/v1/reports", json=stale_doc, headers=auth(old)).status_code == 201

        assert dispatcher.step() == 3
        dispatcher.step()  # nothing new: nothing more
        kinds = sorted((e["type"], e["device"]["id"]) for e in map(json.loads, lines.read_text().splitlines()))
        assert kinds == [("clone-attempt", "dev-1"), ("device-stale", "dev-old"),
                         ("reconnect-slower-than-bound", "dev-1")]
        events = {e["type"]: e for e in map(json.loads, lines.read_text().splitlines())}
        assert events["reconnect-slower-than-bound"]["details"]["reconnect_s"] == 42.5
        assert events["clone-attempt"]["details"]["reason"] == "clone"
        assert events["clone-attempt"]["details"]["hostname"] == "intruder"

        # The stale device reports again, then goes quiet again: stale again.
        fresh = report("dev-old", leak=False)
        assert client.post("/api/v1/reports", json=fresh, headers=auth(old)).status_code == 201
        dispatcher.step()
        assert dispatcher.store.tick(dispatcher.holder, 30, dispatcher.bounds, [], now=time.time() + STALE_CHECK_S
                                     + 200) == 2  # both devices stale 200 s from now
        # The administrator's view from the command line, straight from the database.
        from leakcheck.cli import main
        capsys.readouterr()
        assert main(["collector", "alerts", "--db", db, "events", "--json"]) == 0
        listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [e["type"] for e in listed][:3] == [e["type"] for e in map(json.loads, lines.read_text().splitlines())][:3]
        assert main(["collector", "alerts", "--db", db, "log"]) == 0
        assert "jsonl" in capsys.readouterr().out  # the JSON-lines deliveries are logged like any sink's
        # A second replica's dispatcher does not dispatch while the lease is held.
        other = Dispatcher(app.state.store.engine, config, device_interval_s=60)
        assert other.step() is None
        assert other.store.tick(other.holder, 30, other.bounds, [], now=time.time() + 10_000) == 0  # expired: it takes over
        assert dispatcher.step() is None

        # Old delivered events go; one a sink still owes stays, however old.
        from leakcheck.collector.alerts import events as ev
        store = dispatcher.store
        owed = ev.make("device-stale", time.time(), {"id": "dev-old", "hostname": "old-laptop", "os": "linux"},
                       "medium", "owed", {"n": 1})
        with store._writer.begin() as conn:
            store._write_events(conn, [owed], ["webhook:gone"], time.time())
        total = len(store.events(0, 1000))
        assert store.prune(0.0, now=time.time() + 20_000) == total - 1  # (some ticks above ran in the future)
        assert [e["id"] for e in store.events(0, 1000)] == [owed["id"]]
        assert store.backlog() == {"webhook:gone": 1} and store.deliveries() == []
    app.state.store.engine.dispose()


def test_ocsf_export_of_findings(db):
    app = make_app(db, {})
    with TestClient(app) as client:
        token = enroll(client)
        doc = report("dev-1", leak=True)
        doc["probes"].append({"probe": "split", "status": "warn", "duration_ms": 3, "error": None,
                              "checks": ["full-tunnel"], "findings": [
                                  dict(leak_finding("split.allowed-by-policy"), severity="low"),
                                  dict(leak_finding("split.note"), severity="info")]})
        assert client.post("/api/v1/reports", json=doc, headers=auth(token)).status_code == 201
        response = client.get("/api/v1/export", params={"format": "ocsf"}, headers=auth(analyst(app)))
        assert response.status_code == 200
        found = [json.loads(line) for line in response.text.splitlines()]
    assert [(f["class_uid"], f["finding_info"]["types"][0]) for f in found] == [
        (2004, "dns.resolver-outside-tunnel"), (2003, "split.allowed-by-policy")]
    detection, compliance = found
    assert detection["severity_id"] == 4 and detection["device"]["os"]["type_id"] == 200
    assert detection["metadata"]["correlation_uid"] == doc["report_id"]
    assert detection["evidences"][0]["data"] == {"resolver": "192.0.2.53"}
    assert compliance["compliance"]["requirements"] == ["full-tunnel"]
    assert compliance["remediation"]["desc"] == "Fix it."
    app.state.store.engine.dispose()
