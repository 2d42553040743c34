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


def test_fleet_lists_page_by_cursor_and_stream_all(tmp_path, collector, capsys):
    """Issue 13: --limit pages, the next --cursor on stderr, --all follows
    every page; JSON, CSV and table all cover the fleet exactly once."""
    import re

    import requests

    from tests.agent.conftest import SECRET
    from tests.collector.conftest import leak_finding, make_report

    for i in range(5):
        device = {"id": f"dev-{i}", "hostname": f"host-{i}", "os": "linux", "os_version": "Debian 12"}
        token = requests.post(collector.url + "/api/v1/enroll", timeout=10, json={
            "secret": SECRET, "instance": f"instance-cli-{i:010d}", "device": device}).json()["token"]
        report = make_report(device_id=f"dev-{i}", hostname=f"host-{i}", verdict="leak",
                             findings=[leak_finding()])
        assert requests.post(collector.url + "/api/v1/reports", json=report, timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).status_code == 201
    analyst = tmp_path / "analyst"
    analyst.write_text(collector.analyst_token())
    common = ["--collector", collector.url, "--token-file", str(analyst)]

    assert main(["fleet", "devices", *common, "--format", "json", "--limit", "2"]) == 0
    captured = capsys.readouterr()
    assert [d["hostname"] for d in json.loads(captured.out)] == ["host-0", "host-1"]
    cursor = re.search(r"--cursor (\S+)", captured.err).group(1)
    assert main(["fleet", "devices", *common, "--format", "json", "--limit", "2", "--cursor", cursor]) == 0
    assert [d["hostname"] for d in json.loads(capsys.readouterr().out)] == ["host-2", "host-3"]

    assert main(["fleet", "devices", *common, "--format", "json", "--limit", "2", "--all"]) == 0
    captured = capsys.readouterr()
    assert [d["hostname"] for d in json.loads(captured.out)] == [f"host-{i}" for i in range(5)]
    assert "--cursor" not in captured.err
    assert main(["fleet", "finding-devices", "dns.resolver-outside-tunnel", *common, "--format", "csv",
                 "--limit", "3", "--all"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["hostname"] for r in rows] == [f"host-{i}" for i in range(5)] and "None" not in str(rows)
    assert main(["fleet", "findings", *common, "--limit", "2", "--all", "--os", "linux"]) == 0
    table = capsys.readouterr().out
    assert table.count("dns.resolver-outside-tunnel") == 5 and table.count("finding_id") == 1
    # The audit log is for admins: an analyst token is refused with the reason.
    assert main(["fleet", "audit", *common]) == 2
    assert "403" in capsys.readouterr().err
