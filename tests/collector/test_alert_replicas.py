"""Alerts with several collector replicas over one database: one dispatches
(the lease), events are not doubled, and when the dispatching replica dies
another takes over; and `leakcheck collector serve` itself, with two worker
processes, a settings file and options, delivers a signed webhook."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from datetime import datetime

import requests
from sqlalchemy import select
from fastapi.testclient import TestClient

from leakcheck.collector.alerts import formats
from leakcheck.collector.schema import alert_lease
from tests.agent.conftest import CollectorProcess
from tests.collector.alert_receivers import WebhookReceiver, wait_for
from tests.collector.conftest import SECRET, auth, enroll
from tests.collector.test_alerts import HOOK_SECRET, fast, make_app, report, secret_file, signed  # noqa: F401 (fixture)


def test_two_replicas_one_dispatcher_no_doubles_and_a_takeover(db, secret_file):  # type: ignore[no-untyped-def]
    receiver = WebhookReceiver().start()
    alerts = fast(webhook=[{"url": receiver.url, "secret_file": secret_file}], lease_ttl=2)
    one, two = make_app(db, alerts), make_app(db, alerts)
    try:
        with TestClient(one) as a, TestClient(two) as b:
            devices = [f"dev-{n}" for n in range(10)]
            tokens = {d: enroll(a, d, f"host-{d}", instance=f"instance-{d}-aaaaaaaa") for d in devices}
            for n, d in enumerate(devices):
                client = a if n % 2 else b
                assert client.post("/api/v1/reports", json=report(d, leak=True), headers=auth(tokens[d])).status_code == 201
            wait_for(lambda: len(receiver.events()) >= 10, 10.0, "ten leak events")
            time.sleep(1.5)
            assert sorted(e["device"]["id"] for e in receiver.events()) == devices

            leader = next(app.state.dispatcher for app in (one, two)
                          if app.state.alerts_store.holds_lease(app.state.dispatcher.holder))
            follower = next(app.state.dispatcher for app in (one, two) if app.state.dispatcher is not leader)
            # The leader dies without a word (no lease release): its thread stops, the lease runs out.
            leader._stop.set()
            leader._thread.join()
            with one.state.store.engine.connect() as conn:
                expires = conn.execute(select(alert_lease.c.expires_at)).scalar()
            assert a.post("/api/v1/reports", json=report("dev-3", leak=False),
                          headers=auth(tokens["dev-3"])).status_code == 201
            wait_for(lambda: len(receiver.events()) >= 11, 10.0, "the resolved event after a takeover")
            resolved = receiver.events()[-1]
            detected = datetime.fromisoformat(resolved["time"].replace("Z", "+00:00")).timestamp()
            assert detected >= expires - 0.001  # taken over only once the dead leader's lease ran out
            assert one.state.alerts_store.holds_lease(follower.holder)
            time.sleep(1.0)
            got = receiver.events()
            assert len(got) == len({e["id"] for e in got}) == 11
            assert [e["type"] for e in got][-1] == "leak-resolved"
            assert all(signed(c) for c in receiver.calls)
    finally:
        receiver.stop()
        one.state.store.engine.dispose()
        two.state.store.engine.dispose()


def test_collector_serve_with_workers_settings_file_and_options(db, tmp_path: Path):  # type: ignore[no-untyped-def]
    receiver = WebhookReceiver().start()
    (tmp_path / "hook.secret").write_text(HOOK_SECRET)
    lines = tmp_path / "events.jsonl"
    conf = tmp_path / "collector.toml"
    conf.write_text(f'[alerts]\nbatch_interval = 0.5\npoll_interval = 0.2\n[[alerts.webhook]]\nname = "soc"\n'
                    f'url = "{receiver.url}"\nsecret_file = "hook.secret"\n')
    collector = CollectorProcess(tmp_path, db=db, extra=("--workers", "2", "--config", str(conf),
                                                         "--siem-jsonl", str(lines)))
    collector.start()
    try:
        enrolled = requests.post(collector.url + "/api/v1/enroll", timeout=10, json={
            "secret": SECRET, "instance": "instance-serve-aaaaaaaa",
            "device": {"id": "dev-1", "hostname": "laptop-1", "os": "linux", "os_version": "12"}})
        assert enrolled.status_code == 201, enrolled.text
        token = enrolled.json()["token"]
        response = requests.post(collector.url + "/api/v1/reports", json=report("dev-1", leak=True, hostname="laptop-1"),
                                 headers=auth(token), timeout=10)
        assert response.status_code == 201
        stored = time.time()
        wait_for(lambda: receiver.calls, 5.0, "the webhook from collector serve")
        assert receiver.calls[0].at - stored < 5.0
        time.sleep(1.5)  # two workers, one lease: one call
        [call] = receiver.calls
        assert formats.verify(HOOK_SECRET, call.headers["x-leakcheck-timestamp"],
                              call.headers["x-leakcheck-signature"], call.body)
        [event] = call.events
        assert event["type"] == "device-starts-leaking"
        assert [json.loads(x)["id"] for x in lines.read_text().splitlines()] == [event["id"]]
        log = requests.get(collector.url + "/api/v1/alerts/deliveries", headers=auth(collector.analyst_token("admin")),
                           timeout=10).json()
        assert sorted(d["sink"] for d in log["deliveries"]) == ["jsonl", "webhook:soc"]
        # The same leak in the OCSF export, from the command line.
        token_file = tmp_path / "analyst.token"
        token_file.write_text(collector.analyst_token())
        out = subprocess.run([sys.executable, "-m", "leakcheck", "fleet", "export", "--collector", collector.url,
                              "--token-file", str(token_file), "--format", "ocsf"],
                             check=True, capture_output=True, text=True, timeout=60).stdout
        [finding] = [json.loads(x) for x in out.splitlines()]
        assert (finding["class_name"], finding["finding_info"]["types"], finding["device"]["uid"]) == (
            "Detection Finding", ["dns.resolver-outside-tunnel"], "dev-1")
    finally:
        collector.stop()
        receiver.stop()
