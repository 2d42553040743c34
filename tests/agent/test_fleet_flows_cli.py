"""`leakcheck fleet flows` against a real collector process, the flows
delivered by the agent's own flows spool and uploader."""

from __future__ import annotations

import json

from leakcheck import config as config_mod
from leakcheck.agent.delivery import make_flow_uploader, open_flow_spool
from leakcheck.agent.flowwatch import documents
from leakcheck.cli import main
from leakcheck.device import describe
from tests.agent.conftest import enroll_cli, write_config
from tests.collector.flowdocs import flow


def test_fleet_flows_views(tmp_path, collector, capsys):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    config = config_mod.load(cfg)
    spool = open_flow_spool(config)
    flows = [flow(count=3), flow(dst="198.51.100.8"), flow(exe=None, command="ssh", dst="203.0.113.4", dport=22)]
    for doc in documents(flows, describe(), "0.1.0"):
        spool.add(doc)
    uploader = make_flow_uploader(config)
    assert uploader.drain(spool).delivered == 1 and spool.depth() == 0
    assert uploader.drain(spool).delivered == 0
    token = tmp_path / "analyst"
    token.write_text(collector.analyst_token())
    common = ["--collector", collector.url, "--token-file", str(token)]
    capsys.readouterr()

    assert main(["fleet", "flows", *common, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["app"], r["dst"], r["dport"], r["count"]) for r in rows) == [
        ("/usr/bin/curl", "198.51.100.7", 443, 3), ("/usr/bin/curl", "198.51.100.8", 443, 1),
        ("ssh", "203.0.113.4", 22, 1)]

    assert main(["fleet", "flows", *common, "--app", "ssh"]) == 0
    text = capsys.readouterr().out
    assert "203.0.113.4" in text and "198.51.100.7" not in text
    assert text.splitlines()[0].split()[:4] == ["last_seen", "hostname", "device_id", "app"]

    assert main(["fleet", "flows", *common, "--by", "app"]) == 0
    lines = capsys.readouterr().out.splitlines()
    curl = next(line for line in lines if line.startswith("/usr/bin/curl"))
    assert curl.split()[1:4] == ["1", "2", "4"]  # 1 device, 2 flows, 4 packets

    assert main(["fleet", "flows", *common, "--by", "device", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("device_id,hostname,apps,flows,packets")
    assert f"{describe()['id']},{describe()['hostname']},2,3,5" in out

    assert main(["fleet", "flows", *common, "--device", "no-such-device"]) == 0
    assert capsys.readouterr().out == "(none)\n"
