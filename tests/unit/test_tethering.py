"""The tethering probe on constructed network state (the simulated kernel of
test_perapp answers forwarding lookups: iif, src, forwarding sysctls)."""

from __future__ import annotations

import ipaddress
import json

from leakcheck import config
from leakcheck.linux.firewall import parse_nft_json
from leakcheck.netstate import Address, Firewall, Link, LinkDetail, NetState, Nexthop, Route, Rule
from leakcheck.oracle import Oracle
from leakcheck.probe import ProbeContext
from leakcheck.report import Effect
from leakcheck.tunnel import detect
from leakcheck.probes.tethering import TetheringProbe, client_address, find_downstream
from tests.unit.test_perapp import ADDRS, LAN, LINKS, MAIN_DEFAULT, WG_DEFAULT, WG_INFO, WG_RULES, FakeKernel

net = ipaddress.ip_network
addr = ipaddress.ip_address

USB = Link(4, "usb0", "veth", True, "UP")
USB_ADDR = Address(4, "usb0", addr("192.168.42.1"), 24, 0)
USB_NET = Route(net("192.168.42.0/24"), 254, "unicast", "kernel", 253, (Nexthop(4, "usb0", None),))
TABLE_42 = Route(net("0.0.0.0/0"), 42, "unicast", "boot", 0, (Nexthop(2, "eth0", "100.64.0.1"),))
IIF_RULE = Rule(4, 100, "lookup", 42, iif="usb0")
FORWARDING = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.usb0.forwarding": "1"}
MASQUERADE = {"nftables": [
    {"chain": {"family": "ip", "table": "t", "name": "post", "type": "nat", "hook": "postrouting", "prio": 100,
               "policy": "accept"}},
    {"rule": {"family": "ip", "table": "t", "chain": "post", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": {"prefix": {"addr": "192.168.42.0", "len": 24}}}},
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}},
        {"masquerade": None}]}}]}
FORWARD_DROP = [
    {"chain": {"family": "inet", "table": "k", "name": "fwd", "type": "filter", "hook": "forward", "prio": 0,
               "policy": "drop"}},
    {"rule": {"family": "inet", "table": "k", "chain": "fwd", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wg0"}}, {"accept": None}]}}]


def firewall(*docs) -> Firewall:
    items = [item for doc in docs for item in doc]
    chains, rules = parse_nft_json(json.dumps({"nftables": items}))
    return Firewall(chains=tuple(chains), rules=tuple(rules), sources=("nftables",))


def state(rules=(), routes=(), sysctls=None, fw=None, links=(USB,), addresses=(USB_ADDR,), details=(), **extra):
    return NetState(links=LINKS + tuple(links), addresses=ADDRS + tuple(addresses),
                    routes=(MAIN_DEFAULT, LAN, WG_DEFAULT, USB_NET, *routes),
                    rules=tuple(sorted(WG_RULES + tuple(rules), key=lambda r: r.priority)), wireguard=(WG_INFO,),
                    sysctls=FORWARDING if sysctls is None else sysctls,
                    firewall=fw if fw is not None else firewall(MASQUERADE["nftables"]),
                    link_details=tuple(details), **extra)


def run(st, cfg=None):
    tunnel = detect(st, config.defaults())
    ctx = ProbeContext(config=config.from_mapping(cfg or {"canaries": {"ipv4": ["198.51.100.1"], "ipv6": []}}),
                       state=st, tunnel=tunnel, oracle=Oracle(st, tunnel, FakeKernel(st)), is_root=True,
                       active=False)
    findings = TetheringProbe().run(ctx)
    return findings, {f.id: f for f in findings}


def test_no_downstream_interface_passes_without_findings():
    st = NetState(links=LINKS, addresses=ADDRS, routes=(MAIN_DEFAULT, LAN, WG_DEFAULT), rules=WG_RULES,
                  wireguard=(WG_INFO,))
    assert run(st)[0] == []


def test_tethered_clients_forwarded_out_of_eth0_leak_with_nat_and_route_evidence():
    _, by_id = run(state(rules=(IIF_RULE,), routes=(TABLE_42,)))
    found = by_id["tethering.forwarded-outside-tunnel"]
    assert found.effect is Effect.LEAK
    ev = found.evidence
    assert ev["downstream_interface"] == "usb0" and ev["role"] == "USB tethering"
    assert ev["client_network"] == "192.168.42.0/24" and ev["client_address_used"] == "192.168.42.2"
    assert ev["interface"] == "eth0" and ev["gateway"] == "100.64.0.1" and ev["path"] == "clear"
    assert ev["as"] == {"iif": "usb0", "src": "192.168.42.2"} and ev["rule"] == "100: from all iif usb0 lookup 42"
    assert ev["nat_rules"] == ['ip saddr 192.168.42.0/24 oifname "eth0" masquerade']
    assert ev["firewall_forward"]["result"] == "accept"
    assert ev["forwarding"] == FORWARDING and ev["method"] == "inferred"
    assert by_id["tethering.downstream-interfaces"].effect is Effect.INFO


def test_forwarded_into_the_tunnel_passes():
    findings, by_id = run(state())
    assert set(by_id) == {"tethering.downstream-interfaces"}
    (entry,) = by_id["tethering.downstream-interfaces"].evidence["downstream"]
    assert entry["outcome"] == "forwarded into the tunnel (wg0)"


def test_forwarding_off_passes():
    for sysctls in ({"net.ipv4.ip_forward": "0", "net.ipv4.conf.usb0.forwarding": "0"},
                    {"net.ipv4.ip_forward": "1", "net.ipv4.conf.usb0.forwarding": "0"}):
        _, by_id = run(state(rules=(IIF_RULE,), routes=(TABLE_42,), sysctls=sysctls))
        assert set(by_id) == {"tethering.downstream-interfaces"}
        assert by_id["tethering.downstream-interfaces"].evidence["downstream"][0]["outcome"].startswith("not forwarded")


def test_forward_chain_kill_switch_passes():
    fw = firewall(MASQUERADE["nftables"], FORWARD_DROP)
    _, by_id = run(state(rules=(IIF_RULE,), routes=(TABLE_42,), fw=fw))
    assert "tethering.forwarded-outside-tunnel" not in by_id
    entry = by_id["tethering.downstream-interfaces"].evidence["downstream"][0]
    assert entry["outcome"] == "dropped by the firewall's forward chain"
    assert entry["firewall_forward"]["rule"] == "policy drop"


def test_unreadable_firewall_is_said_in_the_evidence():
    fw = Firewall(unreadable=("nftables: Operation not permitted (needs root)",))
    _, by_id = run(state(rules=(IIF_RULE,), routes=(TABLE_42,), fw=fw))
    ev = by_id["tethering.forwarded-outside-tunnel"].evidence
    assert ev["firewall_forward"]["result"] == "not readable" and "needs root" in ev["firewall_forward"]["note"]


def test_split_tunnel_policy_makes_it_info_when_the_host_goes_direct_too():
    # the host itself goes direct (no tunnel rules): the split probe's business
    st = state(rules=(IIF_RULE,), routes=(TABLE_42,))
    st = NetState(**{**st.__dict__, "rules": (IIF_RULE, Rule(4, 32766, "lookup", 254))})
    findings, by_id = run(st, {"canaries": {"ipv4": ["198.51.100.1"], "ipv6": []}, "policy": {"allow_split": True}})
    assert by_id["tethering.forwarded-outside-tunnel"].effect is Effect.INFO


def test_which_links_are_downstream_and_their_roles():
    bridge = Link(5, "docker0", "bridge", True, "UP")
    port = Link(6, "veth1a2b", "veth", True, "UP", master=5)
    wifi = Link(7, "wlan1", None, True, "UP")
    down_link = Link(8, "virbr9", "bridge", False, "DOWN")
    ptp = Link(9, "ppp-ish", None, True, "UP")
    addresses = (USB_ADDR, Address(5, "docker0", addr("172.17.0.1"), 16, 0),
                 Address(7, "wlan1", addr("10.42.0.1"), 24, 0), Address(8, "virbr9", addr("192.168.122.1"), 24, 0),
                 Address(9, "ppp-ish", addr("10.9.9.1"), 32, 0), Address(6, "veth1a2b", addr("fe80::1"), 64, 253))
    st = state(links=(USB, bridge, port, wifi, down_link, ptp), addresses=addresses,
               details=(LinkDetail("wlan1", devtype="wlan", wireless_mode="AP"),))
    tunnel = detect(st, config.defaults())
    ctx = ProbeContext(config=config.defaults(), state=st, tunnel=tunnel, oracle=Oracle(st, tunnel, FakeKernel(st)),
                       is_root=True, active=False)
    found = {d.link.name: d.role for d in find_downstream(ctx)}
    assert found == {"usb0": "USB tethering", "docker0": "bridge (VMs, containers or a hotspot)",
                     "wlan1": "Wi-Fi hotspot (AP mode)"}


def test_client_address_is_another_host_of_the_subnet():
    assert client_address(Address(4, "usb0", addr("192.168.42.1"), 24, 0)) == addr("192.168.42.2")
    assert client_address(Address(4, "usb0", addr("192.168.42.2"), 24, 0)) == addr("192.168.42.3")
    assert client_address(Address(4, "br0", addr("2001:db8:42::1"), 64, 0)) == addr("2001:db8:42::2")
