"""A tethered client behind the laptop's usb0, forwarded out of eth0 (leak) or
into the tunnel, not forwarded at all, or stopped by a forward-chain kill
switch; through the real CLI (--json). Each also checks the ground truth: a
datagram from the client namespace, traced on the laptop's eth0 and the
gateway's side of the tunnel."""

from __future__ import annotations

import pytest

from tests.lab import CANARY_V4, LAN_ROUTER, LAPTOP_LAN
from tests.lab.test_scenarios import brief, finding, ids, probe, run

pytestmark = pytest.mark.lab

CLIENT_NET = "192.168.42.0/24"
# An OUTPUT-only kill switch: the laptop's own packets may leave only through wg0.
OUTPUT_KILL_SWITCH = """
table inet lc_output_only {
    chain output {
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        oifname "wg0" accept
    }
}
"""


def inventory(report):
    return finding(report, "tethering.downstream-interfaces")["evidence"]["downstream"]


@pytest.mark.parametrize("lab", ["wg-quick+tether-leak"], indirect=True)
def test_tethered_client_forwarded_out_of_eth0_is_caught(lab):
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    assert probe(report, "tethering")["status"] == "leak"
    found = finding(report, "tethering.forwarded-outside-tunnel")
    ev = found["evidence"]
    assert ev["downstream_interface"] == "usb0" and ev["role"] == "USB tethering"
    assert ev["client_network"] == CLIENT_NET and ev["as"] == {"iif": "usb0", "src": "192.168.42.2"}
    assert ev["interface"] == "eth0" and ev["gateway"] == LAN_ROUTER and ev["path"] == "clear"
    assert ev["forwarding"]["net.ipv4.ip_forward"] == "1"
    assert ev["nat_rules"] == [f'ip saddr {CLIENT_NET} oifname "eth0" masquerade']
    assert ev["firewall_forward"]["result"] == "accept" and ev["method"] == "inferred"
    assert "usb0" in found["summary"] and "eth0" in found["summary"]
    # the laptop's own traffic is fine: only the forwarded path leaks
    assert probe(report, "routes")["status"] == "pass"
    trace = lab.trace_udp(CANARY_V4, src_ns=lab.tether_client)
    assert trace.path == "clear" and trace.arrived_from == LAPTOP_LAN, trace


@pytest.mark.parametrize("lab", ["wg-quick+tether-tunnel", "def1+tether-tunnel", "default+tether-tunnel"],
                         indirect=True)
def test_tethered_client_forwarded_into_the_tunnel_passes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert probe(report, "tethering")["status"] == "pass"
    (entry,) = inventory(report)
    assert entry["interface"] == "usb0" and entry["outcome"] == "forwarded into the tunnel (wg0)"
    trace = lab.trace_udp(CANARY_V4, src_ns=lab.tether_client)
    assert trace.path == "tunnel" and trace.arrived, trace


@pytest.mark.parametrize("lab", ["wg-quick+tether-no-forwarding"], indirect=True)
def test_no_forwarding_passes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    (entry,) = inventory(report)
    assert entry["outcome"] == "not forwarded (forwarding is off)"
    assert entry["forwarding"]["net.ipv4.ip_forward"] == "0"
    trace = lab.trace_udp(CANARY_V4, src_ns=lab.tether_client, timeout=0.5)  # it never arrives
    assert not trace.arrived and not trace.clear_on_lan, trace


@pytest.mark.parametrize("lab", ["wg-quick+tether-leak+forward-kill-switch"], indirect=True)
def test_forward_chain_kill_switch_passes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    (entry,) = inventory(report)
    assert entry["outcome"] == "dropped by the firewall's forward chain"
    assert entry["firewall_forward"]["result"] == "drop"
    assert entry["firewall_forward"]["chain"] == "nftables inet lc_fwd forward"
    trace = lab.trace_udp(CANARY_V4, src_ns=lab.tether_client, timeout=0.5)  # it never arrives
    assert not trace.arrived and not trace.clear_on_lan, trace


@pytest.mark.parametrize("lab", ["wg-quick+tunnel-down+tether-leak"], indirect=True)
def test_output_only_kill_switch_does_not_stop_tethered_clients(lab):
    lab.exec(["nft", "-f", "-"], input=OUTPUT_KILL_SWITCH)
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    ev = finding(report, "tethering.forwarded-outside-tunnel")["evidence"]
    assert ev["interface"] == "eth0" and ev["firewall_forward"]["result"] == "accept"
    # the laptop's own canary is held back by the kill switch: routes sees no observed leak
    assert "routes.default-route-outside-tunnel" not in ids(report) or \
        finding(report, "routes.default-route-outside-tunnel")["evidence"]["method"] == "inferred"
    trace = lab.trace_udp(CANARY_V4, src_ns=lab.tether_client)
    assert trace.path == "clear", trace
