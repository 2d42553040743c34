"""macOS backend: every parser on recorded output from real Macs (sources in
tests/unit/data/macos/*.source), then whole recorded machines through the
engine and the probes (tests/unit/data/macos/states/*/SOURCE.md)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from leakcheck.platform.commands import CommandFailed, RecordedRunner
from leakcheck.platform.macos import RouteGetLookup, parsers, state
from leakcheck.rtnl import Query

DATA = Path(__file__).parent / "data" / "macos"


def text(name: str) -> str:
    return (DATA / name).read_text()


def net(prefix: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(prefix)


# ------------------------------------------------------------------ every fixture names its source

def test_every_fixture_has_a_source() -> None:
    fixtures = [p for p in DATA.glob("*.txt")]
    assert len(fixtures) >= 8
    for fixture in fixtures:
        source = Path(str(fixture) + ".source").read_text()
        assert "what:" in source and ("repository:" in source or "url:" in source), fixture.name
        if "repository:" in source:
            assert "commit:" in source and "path:" in source, fixture.name


# ------------------------------------------------------------------ netstat -rn

def test_netstat_vpn_default_as_two_halves() -> None:
    routes = parsers.parse_netstat_routes(text("netstat_rn_utun_def1.txt"))
    assert [(str(r.dst), r.gateway, r.netif) for r in routes] == [
        ("0.0.0.0/1", "10.31.141.13", "utun10"), ("128.0.0.0/1", "10.31.141.13", "utun10"),
        ("0.0.0.0/0", "172.16.0.1", "en0")]
    assert not any(r.scoped for r in routes)


def test_netstat_network_extension_default_and_scoped_wifi_default() -> None:
    vpn, wifi = parsers.parse_netstat_routes(text("netstat_rn_ne_default.txt"))
    assert (str(vpn.dst), vpn.gateway, vpn.link_index, vpn.netif, vpn.scoped) == ("0.0.0.0/0", None, 50, "utun23", False)
    assert (wifi.gateway, wifi.netif, wifi.scoped) == ("192.168.0.1", "en10", True)


def test_netstat_old_format_with_refs_and_use_columns() -> None:
    routes = parsers.parse_netstat_routes(text("netstat_rn_refs_use.txt"))
    by_dst = {str(r.dst): r for r in routes}
    assert by_dst["10.10.10.0/24"].netif == "en0" and by_dst["10.10.10.0/24"].link_index == 4
    assert by_dst["127.0.0.0/8"].netif == "lo0"
    assert by_dst["192.168.220.0/24"].netif == "vmnet8"  # abbreviated destination without a mask
    assert by_dst["172.16.111.0/24"].link_index == 11
    arp = by_dst["10.10.10.1/32"] if not by_dst["10.10.10.1/32"].link_index else None
    assert arp is not None and arp.link_layer and arp.gateway is None  # a MAC, not a next hop
    assert by_dst["224.0.0.0/4"].kind == "multicast"
    assert by_dst["0.0.0.0/0"].gateway == "10.10.10.1"


def test_netstat_both_families() -> None:
    routes = parsers.parse_netstat_routes(text("netstat_r_tiger_inet6.txt"))
    v6 = [r for r in routes if r.dst.version == 6]
    assert {str(r.dst) for r in v6} == {"::1/128", "fe80::/64", "fe80::1/128", "ff01::/32", "ff02::/32"}
    assert [str(r.dst) for r in routes if r.dst.version == 4][0] == "0.0.0.0/0"


def test_netstat_routes_become_the_main_table_without_scoped_or_link_layer_entries() -> None:
    parsed = parsers.parse_netstat_routes(text("netstat_rn_ne_default.txt"))
    links, _ = state.links_and_addresses([], parsed)
    notes: list[str] = []
    routes = state.routes_from_netstat(parsed, links, notes)
    assert [(str(r.dst), r.ifnames) for r in routes] == [("0.0.0.0/0", ("utun23",))]
    assert "1 interface-scoped route(s)" in notes[0]


# ------------------------------------------------------------------ route -n get

def test_route_get_default_via_gateway() -> None:
    got = parsers.parse_route_get(text("route_get_en1.txt"), 4)
    assert (str(got.destination), got.gateway, got.interface, got.kind) == ("0.0.0.0/0", "192.168.1.1", "en1", "unicast")
    assert "STATIC" in got.flags


def test_route_get_answers_the_oracle_and_missing_routes_are_unreachable() -> None:
    from leakcheck.netstate import Link, NetState
    netstate = NetState(links=(Link(5, "en1", None, True, "UP"),))
    failed = CommandFailed(("route",), "exit 1: route: writing to routing socket: not in table",
                           "route: writing to routing socket: not in table")
    runner = RecordedRunner({("route", "-n", "get", "-inet", "192.0.43.10"): DATA / "route_get_en1.txt",
                             ("route", "-n", "get", "-inet", "203.0.113.9"): failed})
    lookup = RouteGetLookup(runner, netstate)
    found, missing = lookup.lookup_many([Query(dst=ipaddress.ip_address("192.0.43.10")),
                                         Query(dst=ipaddress.ip_address("203.0.113.9"))])
    assert (found.prefix, found.oif, found.gateway, found.type) == ("0.0.0.0/0", 5, "192.168.1.1", 1)
    assert missing.error_name == "ENETUNREACH"
    assert lookup.kernel_answers == 2 and lookup.decided_by == RouteGetLookup.KERNEL
    lookup.lookup_many([Query(dst=ipaddress.ip_address("198.51.100.1"))])  # not recorded: the table answers
    assert lookup.decided_by == RouteGetLookup.TABLE


# ------------------------------------------------------------------ scutil --dns

def test_scutil_dns_vpn_resolvers_scoped_and_mdns() -> None:
    parsed = parsers.parse_scutil_dns(text("scutil_dns_ppp_vpn.txt"))
    assert len(parsed) == 10
    assert parsed[0].nameservers == ("192.168.80.10", "192.168.80.24") and parsed[0].ifname == "ppp0"
    assert parsed[0].if_index == 6 and parsed[0].order == 100000 and not parsed[0].scoped
    assert parsed[2].domain == "local" and parsed[2].mdns
    scoped = [r for r in parsed if r.scoped]
    assert [(r.nameservers, r.ifname) for r in scoped] == [(("192.168.1.1",), "en0"),
                                                          (("192.168.80.10", "192.168.80.24"), "ppp0")]


def test_scutil_dns_resolvers_ordinary_lookups_use() -> None:
    notes: list[str] = []
    resolvers = state.resolvers_from_scutil(parsers.parse_scutil_dns(text("scutil_dns_umts_vpn.txt")), notes)
    assert [(str(r.address), r.link, r.takes_any_query) for r in resolvers] == [
        ("139.7.30.126", "ppp0", True), ("139.7.30.125", "ppp0", True),
        ("192.168.80.10", "ppp1", True), ("192.168.80.24", "ppp1", True)]
    assert "scoped resolvers" in notes[0] and "139.7.30.126 (ppp0)" in notes[0]


# ------------------------------------------------------------------ scutil --nc list

def test_scutil_nc_list_services() -> None:
    services = parsers.parse_scutil_nc_list(text("scutil_nc_list.txt"))
    assert [(s.name, s.state, s.kind, s.enabled) for s in services] == [
        ("Work VPN", "Connected", "IPSec", True), ("Personal VPN", "Disconnected", "IKEv2", True)]


def test_scutil_nc_list_full_line_form() -> None:
    """The columns macOS prints between state and name (see the fixture's note)."""
    line = ('* (Connected)      887B3792-3B6E-415F-9E4B-E57C0678DD61 VPN (com.wireguard.macos) "Office"'
            '              [VPN:com.wireguard.macos]')
    (svc,) = parsers.parse_scutil_nc_list(line)
    assert (svc.name, svc.state, svc.kind, svc.service_id) == (
        "Office", "Connected", "VPN:com.wireguard.macos", "887B3792-3B6E-415F-9E4B-E57C0678DD61")


# ------------------------------------------------------------------ ifconfig

def test_ifconfig_interfaces_flags_addresses_and_indexes() -> None:
    interfaces = {i.name: i for i in parsers.parse_ifconfig(text("ifconfig_a.txt"))}
    assert len(interfaces) == 17
    lo0 = interfaces["lo0"]
    assert lo0.inet == [("127.0.0.1", 8, None)] and ("::1", 128) in lo0.inet6 and lo0.index == 1
    assert interfaces["bridge100"].inet == [("192.168.64.1", 24, None)]
    assert interfaces["en0"].up and not interfaces["en0"].running  # Wi-Fi up, status inactive
    assert interfaces["utun1"].index == 0x11 and interfaces["utun1"].inet6 == [("fe80::4443:d3a7:3d8f:d17b", 64)]
    assert not interfaces["awdl0"].up


def test_idle_system_utuns_are_not_a_tunnel() -> None:
    """utun0/utun1 exist on every Mac with only link-local IPv6: no VPN is up."""
    from leakcheck.config import defaults
    from leakcheck.tunnel import detect
    links, addresses = state.links_and_addresses(parsers.parse_ifconfig(text("ifconfig_a.txt")), [])
    from leakcheck.netstate import NetState
    tunnel = detect(NetState(links=links, addresses=addresses), defaults())
    assert tunnel.state == "down" and set(tunnel.interfaces) == {"utun0", "utun1"}


def test_ifconfig_point_to_point_tunnel_address() -> None:
    line = ("utun2: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1500\n"
            "\tinet 10.8.0.6 --> 10.8.0.5 netmask 0xffffffff\n")
    (utun,) = parsers.parse_ifconfig(line)
    assert utun.inet == [("10.8.0.6", 32, "10.8.0.5")] and utun.running


# ------------------------------------------------------------------ pfctl -sr

def test_pfctl_rules_kill_switch_shape() -> None:
    """No recorded `pfctl -sr` with a citable source was found: these lines are
    written here in pfctl's print syntax (pf.conf(5)), not captured."""
    rules = parsers.parse_pfctl_rules('scrub-anchor "com.apple/*" all fragment reassemble\n'
                                      'anchor "com.apple/*" all\n'
                                      "block drop out all\n"
                                      "pass out quick on utun3 all flags S/SA keep state\n"
                                      "pass out quick inet proto udp from any to 203.0.113.7 port = 51820 keep state\n")
    assert [r.action for r in rules] == ["scrub-anchor", "anchor", "block", "pass", "pass"]
    block, tunnel, server = rules[2:]
    assert block.direction == "out" and not block.quick and block.interfaces == ()
    assert tunnel.quick and tunnel.interfaces == ("utun3",)
    assert server.family == "inet" and server.protos == ("udp",) and server.destinations == ("203.0.113.7",)
    assert "port" in server.opaque
    fw = state.firewall_from_pf(rules)
    assert [r.action for r in fw.rules] == ["drop", "accept", "accept"] and fw.sources == ("pf",)
    assert fw.rules[1].oifnames == ("utun3",) and "quick" in fw.rules[1].opaque


# ------------------------------------------------------------------ recorded machines, end to end

from leakcheck import engine  # noqa: E402
from leakcheck.config import defaults  # noqa: E402
from leakcheck.platform.macos import MacBackend  # noqa: E402

STATES = DATA / "states"
CANARY_ROUTE_GET = ("route", "-n", "get", "-inet", "1.1.1.1")


def recorded_mac(name: str) -> tuple[MacBackend, RecordedRunner]:
    d = STATES / name
    runner = RecordedRunner({
        state.NETSTAT: d / "netstat-rn.txt", state.IFCONFIG: d / "ifconfig-a.txt",
        state.SCUTIL_DNS: d / "scutil-dns.txt", state.SCUTIL_NC: d / "scutil-nc-list.txt",
        state.PFCTL_RULES: CommandFailed(state.PFCTL_RULES, "exit 1: pfctl: /dev/pf: Permission denied"),
        CANARY_ROUTE_GET: d / "route-get-1.1.1.1.txt"})
    return MacBackend(runner, read_activity=False, root=False), runner


def run_recorded(name: str):
    backend, runner = recorded_mac(name)
    report = engine.run(defaults(), engine.RunOptions(probes=("routes", "split", "dns", "ipv6"), passive=True),
                        backend=backend)
    return report, runner


def statuses(report) -> dict[str, tuple[str, set[str]]]:
    return {p.probe: (p.status.value, {f.id for f in p.findings}) for p in report.probes}


def test_recorded_full_tunnel_passes() -> None:
    report, runner = run_recorded("full-tunnel")
    assert report.tunnel.state == "up" and report.tunnel.interfaces == ["ppp0"] and report.tunnel.kind == "ppp"
    got = statuses(report)
    assert report.verdict.value == "pass", got
    assert all(status == "pass" for status, _ in got.values())
    # the VPN server's host route is noted, not a leak
    assert got["routes"][1] == {"routes.server-route-any-process"}
    assert CANARY_ROUTE_GET in runner.asked  # the kernel's own answer is asked for the canaries


def test_recorded_split_tunnel_leaks() -> None:
    report, _ = run_recorded("split-tunnel")
    got = statuses(report)
    assert report.verdict.value == "leak"
    # no server is inferred: the tunnel does not take the default path here
    assert got["routes"] == ("leak", {"routes.default-route-outside-tunnel"})
    finding = next(p for p in report.probes if p.probe == "routes").findings[0]
    assert finding.evidence["interface"] == "en0" and finding.evidence["gateway"] == "192.168.1.1"
    assert got["split"][0] == "leak" and "split.prefixes-outside-tunnel" in got["split"][1]
    assert got["dns"] == ("pass", set()) and got["ipv6"] == ("pass", set())


def test_recorded_dns_leak() -> None:
    report, _ = run_recorded("dns-leak")
    got = statuses(report)
    assert got["dns"] == ("leak", {"dns.resolver-outside-tunnel"})
    finding = next(p for p in report.probes if p.probe == "dns").findings[0]
    assert finding.evidence["resolver"] == "192.168.1.1" and finding.evidence["interface"] == "en0"
    assert finding.evidence["source"] == "scutil --dns"
    assert got["routes"][0] == "pass" and got["split"][0] == "pass" and got["ipv6"][0] == "pass"


def test_recorded_ipv6_leak() -> None:
    report, _ = run_recorded("ipv6-leak")
    got = statuses(report)
    assert got["ipv6"] == ("leak", {"ipv6.ipv6-outside-ipv4-only-tunnel"})
    finding = next(p for p in report.probes if p.probe == "ipv6").findings[0]
    assert finding.evidence["interface"] == "en0"
    assert finding.evidence["addresses"] == ["2a01:4f8:c17:1e8f:1c2b:9a5e:5b7e:e51"]
    assert got["routes"][0] == "pass" and got["dns"][0] == "pass"


def test_recorded_state_reads_profiles_servers_and_notes() -> None:
    backend, _ = recorded_mac("full-tunnel")
    netstate = backend.read_state()
    assert [(p.name, p.state, p.kind) for p in netstate.vpn_profiles] == [
        ("Work VPN", "connected", "IPSec"), ("Personal VPN", "disconnected", "IKEv2")]
    assert netstate.vpn_servers == ("203.0.113.7",)
    assert any("pfctl -sr: not read" in n for n in netstate.notes)
    assert netstate.firewall is not None and netstate.firewall.unreadable
