"""The advisory table travels from the collector to the agent: a real
collector process serving `--advisories-file`, a real enrollment, a real
upload; the agent keeps the table beside its spool and posture-updates
prefers it when it is newer than the shipped one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from leakcheck import advisories
from leakcheck import config as config_mod
from leakcheck.agent.delivery import make_uploader, open_spool, spool_report
from leakcheck.vpnclients import recorded, ClientFacts
from tests.agent.conftest import CollectorProcess, enroll_cli, write_config
from tests.agent.reports import synthetic

TABLE = {"schema": advisories.SCHEMA, "date": "2999-01-01", "advisories": [{
    "id": "CVE-2999-0002", "package": "openvpn", "severity": "high", "summary": "From the collector.",
    "introduced": "2.0", "fixed_upstream": "3.0", "fixed": {"debian": {"bookworm": "2.7.0-1"}},
    "sources": ["tests/agent/test_advisories.py"]}]}


@pytest.fixture
def served(tmp_path: Path):
    table = tmp_path / "served-advisories.json"
    table.write_text(json.dumps(TABLE))
    proc = CollectorProcess(tmp_path, extra=("--rate-limit", "100000", "--advisories-file", str(table)))
    proc.start()
    yield proc, table
    proc.stop()


def deliver_one(config) -> None:  # type: ignore[no-untyped-def]
    spool = open_spool(config)
    spool_report(synthetic(), spool)
    uploader = make_uploader(config)
    assert uploader is not None
    try:
        assert uploader.drain(spool).delivered == 1
    finally:
        uploader.close()


def test_the_agent_keeps_the_collectors_table_and_posture_updates_uses_it(tmp_path: Path, served) -> None:
    collector, table = served
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    state_dir = Path(config.get("agent", "state_dir"))
    # no token, no table: it is not public
    assert requests.get(collector.url + "/api/v1/advisories", timeout=5).status_code == 401
    deliver_one(config)
    kept = state_dir / "advisories.json"
    assert json.loads(kept.read_text()) == TABLE
    etag = (state_dir / "advisories.etag").read_text()
    token = (tmp_path / "token").read_text().strip()
    again = requests.get(collector.url + "/api/v1/advisories", timeout=5,
                         headers={"Authorization": f"Bearer {token}", "If-None-Match": etag})
    assert again.status_code == 304
    chosen = recorded(ClientFacts()).advisory_table("", str(state_dir))
    assert chosen.date == "2999-01-01" and chosen.path == str(kept)

    # the admin breaks the table: 503 for everyone, the agent keeps its good copy
    table.write_text("{broken")
    broken = requests.get(collector.url + "/api/v1/advisories", timeout=5,
                          headers={"Authorization": f"Bearer {token}"})
    assert broken.status_code == 503 and "advisory table not served" in broken.json()["detail"]
    deliver_one(config)
    assert json.loads(kept.read_text()) == TABLE


def test_no_table_configured_is_404_and_nothing_is_kept(tmp_path: Path, collector) -> None:
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    deliver_one(config)
    token = (tmp_path / "token").read_text().strip()
    answer = requests.get(collector.url + "/api/v1/advisories", timeout=5, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 404
    assert not (Path(config.get("agent", "state_dir")) / "advisories.json").exists()
    shipped = recorded(ClientFacts()).advisory_table("", config.get("agent", "state_dir"))
    assert shipped.path == str(advisories.SHIPPED)
