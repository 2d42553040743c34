"""Issue 8's failures 2, 3 and 4 as lab scenarios, each with its correct twin,
through the real CLI (--json) inside the laptop namespace:

- failure 2: resolv.conf points at a local stub (dnsmasq on 127.0.0.53)
  whose upstream is pinned to the physical interface (SO_BINDTODEVICE via
  dnsmasq's `server=ADDR@eth0`): a leak with evidence, not a crash. Twin:
  the stub forwards into the tunnel.
- failure 3: an IPv4-only tunnel beside a global IPv6 address and an IPv6
  default route on eth0 with `canaries.ipv6 = []`: still a leak. Twins: the
  full tunnel and the IPv4-only tunnel with no IPv6 default, same config.
- failure 4: TunnelVision routes behind an nftables kill switch (output on
  eth0 only for the tunnel's own UDP, the LAN and link-local): routes and
  split both pass. Twin: the same with a "kill switch" that lets eth0 out.

The stub and the firewall are set up by the test on top of a scenario (they
die with the laptop namespace at the next reset); nothing here is shared.
"""

from __future__ import annotations

import shutil

import pytest

from tests.lab import (CORP_RESOLVER, ISP_RESOLVER, LAN_ROUTER, LAPTOP_LAN_V6, VPN_PORT, VPN_SERVER)
from tests.lab.test_scenarios import brief, finding, ids, probe, run

pytestmark = pytest.mark.lab

STUB = "127.0.0.53"
TUNNELVISION = "198.51.100.0/24"


def start_stub(lab, upstream: str) -> None:
    """dnsmasq as the laptop's local stub on 127.0.0.53, forwarding to `upstream`
    ("ADDR" or "ADDR@IFACE"); resolv.conf then names only the stub."""
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    argv = [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", f"--listen-address={STUB}",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--cache-size=0", "--user=root",
            f"--pid-file={lab.workdir / 'dnsmasq.pid'}", f"--server={upstream}", "--log-queries",
            "--log-facility=-"]
    lab.start_lap_process("dnsmasq", argv)
    lab.write_resolv(STUB)
    # ready once it answers (the lab resolvers answer every name)
    lab.dns_query(STUB, "ready.lab.example")


def kill_switch(lab, *, leaky: bool = False) -> None:
    """An nftables kill switch as VPN clients install it: the laptop's output may leave
    only by lo and wg0, to the VPN server's WireGuard port, to the LAN and link-local.
    `leaky`: the same table plus 'oifname eth0 accept' (a kill switch in name only)."""
    extra = '        oifname "eth0" accept\n' if leaky else ""
    ruleset = f"""
table inet lc_verdict_ks {{
    chain output {{
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        oifname "wg0" accept
        ip daddr {VPN_SERVER} udp dport {VPN_PORT} accept
        ip daddr 100.64.0.0/24 accept
        ip6 daddr {{ fe80::/10, ff02::/16 }} accept
        icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept
{extra}    }}
}}
"""
    lab.exec(["nft", "-f", "-"], input=ruleset)


# -- failure 2: a local stub resolver --------------------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_stub_pinned_to_the_physical_interface_is_a_leak(lab):
    start_stub(lab, f"{ISP_RESOLVER}@eth0")
    report = run(lab)
    dns = probe(report, "dns")  # no error: the probe does not crash
    assert dns["status"] == "leak", brief(report)
    assert report["verdict"] == "leak"
    evidence = finding(report, "dns.resolver-outside-tunnel")["evidence"]
    assert evidence["method"] == "observed"
    assert evidence["stub"]["address"] == STUB
    assert evidence["stub"]["process"] == "dnsmasq", evidence
    assert evidence["upstream"] == ISP_RESOLVER and evidence["upstream_interface"] == "eth0"
    assert evidence["observed"]["seen_in_clear_on"] == ["eth0"]
    assert "packet" in evidence["observed"]
    assert any(q["qname"].startswith("lc-") for q in lab.dns_log("isp")), "the ISP resolver saw no query"


@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_stub_forwarding_into_the_tunnel_passes(lab):
    start_stub(lab, CORP_RESOLVER)
    report = run(lab)
    assert probe(report, "dns")["status"] == "pass", brief(report)
    assert report["verdict"] == "pass", brief(report)
    assert any(q["qname"].startswith("lc-") for q in lab.dns_log("vpn")), "the corporate resolver saw no query"
    assert not any(q["qname"].startswith("lc-") for q in lab.dns_log("isp"))


# -- failure 3: both families whatever the canaries say ---------------------------------------

NO_V6_CANARIES = {"canaries": {"ipv6": []}}


@pytest.mark.parametrize("lab", ["wg-quick+ipv6-beside-ipv4-tunnel"], indirect=True)
def test_ipv6_beside_ipv4_only_tunnel_without_v6_canaries_is_a_leak(lab):
    report = run(lab, NO_V6_CANARIES)
    assert report["verdict"] == "leak", brief(report)
    assert probe(report, "ipv6")["status"] == "leak"
    evidence = finding(report, "ipv6.ipv6-outside-ipv4-only-tunnel")["evidence"]
    assert evidence["interface"] == "eth0" and LAPTOP_LAN_V6 in evidence["addresses"]
    assert evidence["destinations_from"] == "built-in", evidence
    assert "routes.default-route-outside-tunnel" not in ids(report)


@pytest.mark.parametrize("lab", ["wg-quick", "wg-quick+ipv6-beside-ipv4-tunnel"], indirect=True)
def test_no_ipv6_path_without_v6_canaries_passes(lab):
    if lab.scenario.faults:  # the IPv4-only tunnel, and no IPv6 default route on eth0 either
        lab.ip("-6 route del default")
    report = run(lab, NO_V6_CANARIES)
    assert report["verdict"] == "pass", brief(report)
    assert probe(report, "ipv6")["status"] == "pass"


# -- failure 4: probes agree about the same packet --------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick+tunnelvision"], indirect=True)
def test_tunnelvision_behind_a_kill_switch_passes_in_every_probe(lab):
    kill_switch(lab)
    report = run(lab)
    assert probe(report, "routes")["status"] == "pass", brief(report)
    assert probe(report, "split")["status"] == "pass", brief(report)
    assert report["verdict"] == "pass", brief(report)
    assert "split.prefixes-outside-tunnel" not in ids(report)
    # the exact map still accounts for the route, and says the firewall decided
    held = finding(report, "split.egress-map")["evidence"]
    assert held["held_by_firewall"] == [f"{TUNNELVISION} (eth0)"] and held["held_decided_by"] == "firewall"
    assert "policy of lc_verdict_ks output" in held["held_by"], held


@pytest.mark.parametrize("lab", ["wg-quick+tunnelvision"], indirect=True)
def test_tunnelvision_behind_a_leaky_kill_switch_leaks_in_both_probes(lab):
    kill_switch(lab, leaky=True)
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    route = finding(report, "routes.more-specific-route-outside-tunnel")["evidence"]
    assert route["prefix"] == TUNNELVISION and route["interface"] == "eth0"
    assert TUNNELVISION in finding(report, "split.prefixes-outside-tunnel")["evidence"]["prefixes"]
    assert LAN_ROUTER == route["gateway"]
