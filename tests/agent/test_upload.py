"""Spool + uploader + enrollment against a real collector process on loopback."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import requests

from leakcheck import config as config_mod
from leakcheck.agent.delivery import make_uploader, open_spool, spool_report
from leakcheck.cli import main
from tests.agent.conftest import CollectorProcess, enroll_cli, write_config
from tests.agent.reports import synthetic


def test_enroll_stores_token_0600_and_run_upload_delivers(tmp_path, collector, monkeypatch, capsys):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    capsys.readouterr()
    token_file = tmp_path / "token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600

    from leakcheck import engine
    sent = synthetic()
    monkeypatch.setattr(engine, "run", lambda config, options=None, **kw: sent)
    code = main(["run", "--upload", "--json", "--config", str(cfg)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["agent"]["spool_depth"] == 0
    assert collector.report_ids() == [sent.report_id]
    assert open_spool(config_mod.load(cfg)).depth() == 0

    status = main(["status", "--config", str(cfg), "--json"])
    assert status == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["spool_depth"] == 0 and shown["last_upload"] and shown["last_error"] is None

    # The analyst sees it; the device token cannot read anything.
    token = token_file.read_text().strip()
    analyst = collector.analyst_token()
    devices = requests.get(collector.url + "/api/v1/devices",
                           headers={"Authorization": f"Bearer {analyst}"}, timeout=5).json()
    assert [d["last_report_id"] for d in devices] == [sent.report_id]
    assert devices[0]["agent"]["spool_depth"] == 0
    denied = requests.get(collector.url + "/api/v1/devices", headers={"Authorization": f"Bearer {token}"},
                          timeout=5)
    assert denied.status_code == 403


def test_collector_down_whole_run_then_up_exactly_once(tmp_path, collector):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    collector.stop()
    spool = open_spool(config)
    sent = []
    for _ in range(15):
        report = synthetic("schedule")
        spool_report(report, spool)
        sent.append(report.report_id)
        result = make_uploader(config).drain(spool, deadline=time.monotonic() + 0.2)
        assert result.delivered == 0 and result.error.startswith("cannot reach")
    assert spool.depth() == 15
    last = spool.entries()[-1].load()
    # The agent's self-health says the collector is unreachable.
    assert last["agent"]["spool_depth"] == 14 and last["agent"]["last_error"].startswith("cannot reach")
    collector.start()
    result = make_uploader(config).drain(spool, deadline=time.monotonic() + 30)
    assert result.delivered == 15 and spool.depth() == 0
    assert sorted(collector.report_ids()) == sorted(sent)


def test_uploader_honours_429_retry_after(tmp_path):
    server = CollectorProcess(tmp_path, extra=("--rate-limit", "2", "--rate-window", "2"))
    server.start()
    try:
        cfg = write_config(tmp_path, server.url)
        enroll_cli(cfg, server.secret_file, server.url)
        config = config_mod.load(cfg)
        spool = open_spool(config)
        for _ in range(5):
            spool_report(synthetic(), spool)
        waits: list[float] = []

        def wait(seconds: float) -> bool:
            waits.append(seconds)
            time.sleep(seconds)
            return False
        result = make_uploader(config).drain(spool, deadline=time.monotonic() + 30, wait=wait)
        assert result.delivered == 5 and len(server.report_ids()) == 5
        # Retry-After (whole seconds within the 2 s window) was used, not a blind backoff.
        assert waits and all(1 <= w <= 2 for w in waits)
    finally:
        server.stop()


def test_revoked_token_stops_and_keeps_spool(tmp_path, collector):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    token = Path(config.get("collector", "token_file")).read_text().strip()
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.settings import database_url
    from leakcheck.collector.store import Store
    store = Store(make_engine(database_url(collector.db)))
    assert store.revoke_token(token)
    store.engine.dispose()
    spool = open_spool(config)
    spool_report(synthetic(), spool)
    result = make_uploader(config).drain(spool, deadline=time.monotonic() + 5)
    assert result.error.startswith("unauthorized") and spool.depth() == 1
    assert collector.report_ids() == []


def test_kept_alive_connection_closed_by_collector_is_reopened(tmp_path, collector):
    # The agent keeps one uploader connection for hours; a collector restart
    # in between must not cost a failed attempt and a backoff.
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    spool = open_spool(config)
    uploader = make_uploader(config)
    try:
        spool_report(synthetic(), spool)
        assert uploader.drain(spool, deadline=time.monotonic() + 10).delivered == 1
        collector.stop()
        collector.start()
        spool_report(synthetic(), spool)
        result = uploader.drain(spool, deadline=time.monotonic() + 10)
        assert result.delivered == 1 and result.error is None
    finally:
        uploader.close()
    assert len(collector.report_ids()) == 2
