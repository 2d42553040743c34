"""`leakcheck fleet conformance` against a real collector process: a report
delivered by the agent's uploader, read back as the conformance table."""

from __future__ import annotations

import csv
import io
import json

from leakcheck import config as config_mod
from leakcheck.agent.delivery import make_uploader, open_spool, spool_report
from leakcheck.cli import main
from leakcheck.report import Effect, Finding, Guidance, ProbeResult, Severity, Status
from tests.agent.conftest import enroll_cli, write_config
from tests.agent.reports import synthetic


def test_fleet_conformance_cli(tmp_path, collector, capsys):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    spool = open_spool(config)
    report = synthetic("schedule")
    report.probes = [
        ProbeResult("dns", Status.PASS, 5, [], checks=("dns",)),
        ProbeResult("posture-forced", Status.WARN, 3, [Finding(
            "posture-forced.no-lockdown", Severity.HIGH, "Traffic would leave eth0 in clear.",
            {"interface": "eth0"}, "Add a kill switch.", Guidance.FORCED, Effect.WARN)], checks=("forced",)),
        ProbeResult("posture-autoconnect", Status.SKIP, 0, [], checks=("autoconnect",)),
    ]
    spool_report(report, spool)
    assert make_uploader(config).drain(spool).delivered == 1
    token = tmp_path / "analyst"
    token.write_text(collector.analyst_token())
    common = ["--collector", collector.url, "--token-file", str(token)]
    capsys.readouterr()

    assert main(["fleet", "conformance", *common]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert "NCSC conformance: 1 devices" in text
    assert lines["dns"][1:] == ["1", "1", "0", "0"]
    assert lines["forced"][1:] == ["1", "0", "1", "0"]
    assert lines["autoconnect"][1:] == ["0", "0", "0", "1"]  # skipped: not checked

    assert main(["fleet", "conformance", *common, "--format", "json", "--days", "7"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["devices"] == 1 and len(data["trend"]) == 1

    assert main(["fleet", "conformance", *common, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    forced = [r for r in rows if r["recommendation"] == "forced"]
    assert forced[0]["day"] == "latest" and forced[0]["fails"] == "1"
