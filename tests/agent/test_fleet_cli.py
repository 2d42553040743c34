"""`leakcheck fleet` against a real collector process."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from leakcheck import config as config_mod
from leakcheck.agent.delivery import make_uploader, open_spool, spool_report
from leakcheck.cli import main
from leakcheck.report import Finding, ProbeResult, Severity, Status
from tests.agent.conftest import enroll_cli, write_config
from tests.agent.reports import synthetic


def test_fleet_views(tmp_path, collector, capsys):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    spool = open_spool(config)
    scheduled = synthetic("schedule")
    leaking = synthetic("network-change")
    # Started a second later: it is the device's latest state (times have ms resolution).
    leaking.started_at = scheduled.started_at + timedelta(seconds=1)
    leaking.finished_at = leaking.started_at + timedelta(seconds=1)
    leaking.probes = [ProbeResult("dns", Status.LEAK, 5, [Finding(
        "dns.resolver-outside-tunnel", Severity.HIGH, "DNS to the ISP.", {"resolver": "192.0.2.53"},
        "Use the tunnel's resolver.", "NCSC")])]
    for report in (scheduled, leaking):
        spool_report(report, spool)
    assert make_uploader(config).drain(spool).delivered == 2
    token = tmp_path / "analyst"
    token.write_text(collector.analyst_token())
    common = ["--collector", collector.url, "--token-file", str(token)]
    capsys.readouterr()

    assert main(["fleet", "summary", *common]) == 0
    text = capsys.readouterr().out
    assert "1 devices, 1 leaking now" in text and "dns.resolver-outside-tunnel" in text

    assert main(["fleet", "devices", *common, "--format", "json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert devices[0]["verdict"] == "leak" and devices[0]["last_report_id"] == leaking.report_id

    assert main(["fleet", "findings", *common, "--probe", "dns"]) == 0
    assert "dns.resolver-outside-tunnel" in capsys.readouterr().out

    assert main(["fleet", "export", *common, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["trigger"] for r in rows) == ["network-change", "schedule"]

    # A device token is refused, with the reason.
    assert main(["fleet", "devices", "--collector", collector.url, "--token-file", str(tmp_path / "token")]) == 2
    assert "403" in capsys.readouterr().err
