"""Per-user, per-mark and bound-socket bypasses, each beside its correct twin,
through the real CLI (--json) in the lab's laptop namespace."""

from __future__ import annotations

import pytest

from tests.lab import CANARY_V4, LAN_ROUTER
from tests.lab.test_scenarios import brief, finding, ids, probe, run

pytestmark = pytest.mark.lab


def perapp_findings(report):
    return probe(report, "perapp")["findings"]


# -- correct twins: the VPN's own traffic and marks are not a leak -----------------------

@pytest.mark.parametrize("lab", ["wg-quick", "def1", "default", "ipsec"], indirect=True)
def test_correct_tunnels_pass_perapp_and_tethering(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert probe(report, "perapp")["status"] == "pass" and perapp_findings(report) == []
    assert probe(report, "tethering")["status"] == "pass" and probe(report, "tethering")["findings"] == []


@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_wg_quick_fwmark_rule_and_wireguard_go_socket_are_the_vpns_own(lab):
    # the laptop really has what could look like a bypass: a mark rule and a UDP socket outside wg0
    rules = lab.exec(["ip", "-4", "rule"]).stdout
    assert "not from all fwmark 0xca6c lookup 51820" in rules
    sockets = lab.exec(["ss", "-uanpe"]).stdout
    assert "wireguard-go" in sockets
    report = run(lab)
    assert probe(report, "perapp")["status"] == "pass", brief(report)
    assert perapp_findings(report) == []


@pytest.mark.parametrize("lab", ["wg-quick+uid-in-tunnel"], indirect=True)
def test_uid_rule_that_keeps_the_user_in_the_tunnel_passes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert perapp_findings(report) == []


@pytest.mark.parametrize("lab", ["wg-quick+bound-socket-tunnel"], indirect=True)
def test_socket_bound_to_the_tunnel_passes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert perapp_findings(report) == []


# -- leaks ------------------------------------------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick+uid-bypass"], indirect=True)
def test_uid_rule_ahead_of_the_tunnel_is_caught_naming_user_and_process(lab):
    sleeper = lab._procs["uid-1234"].pid
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    assert probe(report, "perapp")["status"] == "leak"
    found = finding(report, "perapp.user-bypasses-tunnel")
    ev = found["evidence"]
    assert [u["uid"] for u in ev["users"]] == [1234]
    assert ev["rule"] == "100: from all uidrange 1234-1234 lookup main"
    assert ev["interface"] == "eth0" and ev["gateway"] == LAN_ROUTER and ev["path"] == "clear"
    assert {"pid": sleeper, "name": "sleep", "uid": 1234} == {k: ev["processes"][0][k] for k in ("pid", "name", "uid")}
    # a test packet sent as uid 1234 was seen leaving eth0
    assert ev["method"] == "observed", ev
    assert ev["users"][0]["observed"]["seen_in_clear_on"] == ["eth0"]
    assert "uid 1234" in found["summary"] and f"sleep (pid {sleeper})" in found["summary"]
    # root's (the agent's) traffic still goes into the tunnel
    assert probe(report, "routes")["status"] == "pass"


@pytest.mark.parametrize("lab", ["wg-quick+uid-mark-bypass"], indirect=True)
def test_firewall_marking_a_user_is_caught_with_the_nftables_rule(lab):
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    ev = finding(report, "perapp.user-bypasses-tunnel")["evidence"]
    assert ev["firewall_rules"] == ["meta skuid 1234 meta mark set 0x00001234"]
    assert ev["mark"] == "0x1234" and ev["rule"] == "90: from all fwmark 0x1234 lookup main"
    assert ev["interface"] == "eth0" and ev["method"] == "observed"
    assert "perapp.mark-bypasses-tunnel" not in ids(report)  # the mark is that user's, not reported twice


@pytest.mark.parametrize("lab", ["wg-quick+bound-socket"], indirect=True)
def test_socket_bound_to_eth0_is_caught_naming_the_process(lab):
    pid = lab._procs["bound-eth0"].pid
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    assert probe(report, "perapp")["status"] == "leak"
    found = finding(report, "perapp.socket-bound-to-physical-interface")
    ev = found["evidence"]
    assert ev["bound_device"] == "eth0" and ev["remote"] == f"{CANARY_V4}:9" and ev["protocol"] == "udp"
    assert ev["processes"][0]["pid"] == pid and ev["processes"][0]["name"].startswith("python")
    assert ev["interface"] == "eth0" and ev["path"] == "clear"
    assert f"(pid {pid}" in found["summary"]
