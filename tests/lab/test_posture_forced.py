"""Posture in the lab: the forced-VPN what-if against a real tunnel, and proof
that a passive run with every probe changes nothing on the laptop.

- A real wg-quick tunnel (wireguard-go) with no kill switch: posture-forced
  must say traffic would leave eth0 in clear via the LAN router if the
  tunnel dropped (both families), and the ground truth agrees: the test then
  really takes wg0 down and a packet to the canary leaves eth0 in clear.
  The twin: the same tunnel behind the lab's nftables kill switch: blocked,
  citing the kill switch's chain, and with wg0 really down the canary packet
  never appears on the LAN.
- A passive run with all probes leaves the nft ruleset, routes (all tables,
  both families), policy rules and the sysctls (ip_forward, every
  rp_filter, every disable_ipv6) exactly as they were.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.lab import CANARY_V4, LAN_ROUTER
from tests.lab.reports import brief, finding, ids, probe, run

REQUIRE = {"posture": {"require_lockdown": True}}


def canary_leaves_in_clear(lab) -> bool:
    """Ground truth: take wg0 down for real, send one UDP packet to the canary,
    and see whether it appears on the laptop's LAN (captured at the isp side)."""
    lab.ip("link set wg0 down")
    with lab.capture("isp", "lan0", f"udp and dst host {CANARY_V4} and dst port 9") as cap:
        with lab.socket("lap", socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b"posture-ground-truth", (CANARY_V4, 9))
            except OSError:
                pass  # refused by the kill switch (EPERM): that is the point
        seen = cap.wait_for(lambda p: p.payload.endswith(b"posture-ground-truth"), timeout=1.0)
    return seen is not None


@pytest.mark.scenario("wg-quick")
def test_without_kill_switch_a_dropped_tunnel_sends_traffic_in_clear(lab):
    report = run(lab, REQUIRE, "--passive")
    forced = probe(report, "posture-forced")
    assert forced["status"] == "warn" and forced["checks"] == ["forced"], brief(report)
    no_lockdown = finding(report, "posture-forced.no-lockdown")
    first = no_lockdown["evidence"]["first_clear"]
    assert (first["interface"], first["gateway"], first["path"]) == ("eth0", LAN_ROUTER, "clear")
    families = no_lockdown["evidence"]["families"]
    assert families["IPv4"]["result"] == "clear" and families["IPv6"]["result"] == "clear"
    assert "wg0" in no_lockdown["evidence"]["without_tunnel"]["links_down"]
    assert no_lockdown["guidance"].startswith("NCSC VPN guidance: a forced VPN")
    # the tunnel itself is correct: only the posture warns
    for name in ("routes", "split", "dns", "ipv6"):
        assert probe(report, name)["status"] == "pass", brief(report)
    assert report["verdict"] == "warn"
    assert canary_leaves_in_clear(lab)


@pytest.mark.scenario("wg-quick", "kill-switch")
def test_kill_switch_blocks_traffic_when_the_tunnel_drops(lab):
    report = run(lab, REQUIRE, "--passive")
    assert probe(report, "posture-forced")["status"] == "pass", brief(report)
    assert "posture-forced.no-lockdown" not in ids(report)
    lockdown = finding(report, "posture-forced.lockdown")
    assert "lab_killswitch" in lockdown["summary"], lockdown["summary"]
    for family in ("IPv4", "IPv6"):
        result = lockdown["evidence"]["families"][family]
        assert result["result"] == "blocked"
        assert {d["decided_by"] for d in result["destinations"]} == {"firewall"}
        assert {d["interface"] for d in result["destinations"]} == {"eth0"}
    assert not canary_leaves_in_clear(lab)


# -- passive evaluation never changes the network -----------------------------------------

VOLATILE = re.compile(r"\s*expires \d+sec|\s*used \d+|\s*age \d+(\.\d+)?sec")


def snapshot(lab) -> dict[str, str]:
    def text(cmd: str) -> str:
        return VOLATILE.sub("", lab.exec(cmd).stdout)

    sysctls = lab.exec(["sh", "-c", "sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding; "
                                    "sysctl -a 2>/dev/null | grep -E '\\.(rp_filter|disable_ipv6) '"]).stdout
    return {
        "nft": text("nft list ruleset"),
        "routes4": text("ip -4 route show table all"),
        "routes6": text("ip -6 route show table all"),
        "rules4": text("ip -4 rule show"),
        "rules6": text("ip -6 rule show"),
        "sysctls": "\n".join(sorted(sysctls.splitlines())),
    }


@pytest.mark.parametrize("lab", ["wg-quick+kill-switch", "ipsec", "def1+tunnelvision"], indirect=True)
def test_a_passive_run_changes_nothing(lab):
    before = snapshot(lab)
    assert "rp_filter" in before["sysctls"] and "disable_ipv6" in before["sysctls"]
    assert before["routes4"].strip() and before["rules4"].strip()
    report = run(lab, REQUIRE, "--passive")
    assert {p["probe"] for p in report["probes"]} >= {"routes", "split", "dns", "ipv6", "perapp", "tethering",
                                                     "reconnect", "posture-forced", "posture-autoconnect",
                                                     "posture-captive"}
    after = snapshot(lab)
    for key in before:
        assert after[key] == before[key], f"{key} changed by a passive run"
