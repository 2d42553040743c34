"""Windows backend: every parser on recorded output from real Windows machines
or Microsoft's documentation (sources in tests/unit/data/windows/*.source),
then whole recorded machines through the engine and the probes
(tests/unit/data/windows/states/*/SOURCE.md)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from leakcheck.netstate import Link, NetState
from leakcheck.platform.commands import CommandFailed, RecordedRunner
from leakcheck.platform.windows import FindNetRouteLookup, find_net_route_argv, parsers, state
from leakcheck.rtnl import Query

DATA = Path(__file__).parent / "data" / "windows"


def objects(name: str) -> list[dict]:
    return parsers.parse_objects((DATA / name).read_text())


def test_every_fixture_has_a_source() -> None:
    fixtures = [p for p in DATA.iterdir() if p.is_file() and not p.name.endswith(".source")]
    assert len(fixtures) >= 5
    for fixture in fixtures:
        source = Path(str(fixture) + ".source").read_text()
        assert "what:" in source and "repository:" in source and "commit:" in source, fixture.name


# ------------------------------------------------------------------ Find-NetRoute

def test_find_net_route_local_address_and_chosen_route() -> None:
    found = parsers.find_net_route(objects("find_netroute.txt"))
    route = found.route
    assert found.source == "172.31.234.140"
    assert (str(route.prefix), route.next_hop, route.ifindex, route.alias, route.metric, route.protocol) == (
        "0.0.0.0/0", "172.31.232.1", 3, "Ethernet", 0, "NetMgmt")


def test_find_net_route_answers_the_oracle() -> None:
    netstate = NetState(links=(Link(3, "Ethernet", None, True, "UP"),))
    query = Query(dst=ipaddress.ip_address("10.79.197.200"))
    failed = Query(dst=ipaddress.ip_address("203.0.113.9"))
    runner = RecordedRunner({find_net_route_argv(query): DATA / "find_netroute.txt",
                             find_net_route_argv(failed): CommandFailed(("powershell.exe",), "exit 1")})
    lookup = FindNetRouteLookup(runner, netstate, {})
    answer, none = lookup.lookup_many([query, failed])
    assert (answer.prefix, answer.oif, answer.gateway, answer.prefsrc) == ("0.0.0.0/0", 3, "172.31.232.1",
                                                                          "172.31.234.140")
    assert none.error_name == "ENETUNREACH"


def test_find_net_route_as_json() -> None:
    """The live backend reads JSON: enums arrive as numbers (AddressFamily 2, Protocol 3)."""
    listed = objects("find_netroute.txt")
    as_json = json.dumps([{k: v for k, v in o.items() if k in ("IPAddress", "DestinationPrefix", "NextHop",
                                                                 "InterfaceIndex", "InterfaceAlias", "RouteMetric")}
                          | {"AddressFamily": 2, **({"Protocol": 3} if "DestinationPrefix" in o else {})}
                          for o in listed], indent=4)
    found = parsers.find_net_route(parsers.parse_objects(as_json))
    assert (str(found.route.prefix), found.route.protocol, found.source) == ("0.0.0.0/0", "NetMgmt", "172.31.234.140")


# ------------------------------------------------------------------ routes, interfaces, addresses

def routes_table() -> list[dict]:
    """The README's table turned back into the Get-NetRoute / Get-NetIPInterface properties."""
    rows = []
    lines = (DATA / "routes_per_adapter.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        rows.append(dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")))))
    return [{"DestinationPrefix": r["DestinationPrefix"], "NextHop": r["DefaultGateway"] or "0.0.0.0",
             "RouteMetric": int(r["RouteMetric"]), "InterfaceAlias": r["Interface"], "InterfaceIndex": int(r["IfIndex"]),
             "InterfaceMetric": int(r["InterfaceMetric"]), "AddressFamily": 2} for r in rows]


def test_net_routes_of_a_split_tunnel_laptop() -> None:
    routes = parsers.net_routes(routes_table())
    assert len(routes) == 6
    default = [r for r in routes if r.prefix.prefixlen == 0]
    assert [(r.next_hop, r.ifindex, r.alias) for r in default] == [("10.229.128.1", 12, "Wi-Fi")]
    vpn = [str(r.prefix) for r in routes if r.alias == "MYVPN"]
    assert vpn == ["224.0.0.0/4", "216.251.141.226/32", "207.68.174.0/24", "100.64.137.197/32"]
    assert all(r.next_hop is None for r in routes if r.alias == "MYVPN")  # on-link over the tunnel


def test_net_ip_interfaces_and_addresses() -> None:
    rows = routes_table()
    interfaces = parsers.ip_interfaces([{"InterfaceIndex": r["InterfaceIndex"], "InterfaceAlias": r["InterfaceAlias"],
                                         "AddressFamily": 2, "ConnectionState": 1,
                                         "InterfaceMetric": r["InterfaceMetric"]} for r in rows])
    assert {(i.alias, i.family, i.metric, i.connected) for i in interfaces} == {("MYVPN", 4, 1, True),
                                                                              ("Wi-Fi", 4, 35, True)}
    (address,) = parsers.ip_addresses(objects("find_netroute.txt"))
    assert (address.address, address.prefixlen, address.ifindex, address.alias) == ("172.31.234.140", 21, 3, "Ethernet")


# ------------------------------------------------------------------ DNS

def test_nrpt_direct_access_rules() -> None:
    rules = parsers.nrpt_policies(objects("get_dnsclientnrptpolicy.txt"))
    assert [(r.namespace, r.name_servers, r.direct_access) for r in rules] == [
        ("nls.corp.contoso.com", (), False),
        (".corp.contoso.com", ("2001:db8:1::2", "2001:db8:2::20", "2001:db8:6::6"), True)]


def test_nrpt_rules_become_domain_resolvers_not_catch_all() -> None:
    notes: list[str] = []
    resolvers = state.resolvers([], parsers.nrpt_policies(objects("get_dnsclientnrptpolicy.txt")), (), notes)
    assert [(str(r.address), r.domains, r.takes_any_query) for r in resolvers] == [
        ("2001:db8:1::2", (".corp.contoso.com",), False), ("2001:db8:2::20", (".corp.contoso.com",), False),
        ("2001:db8:6::6", (".corp.contoso.com",), False)]


def test_dns_server_addresses_json() -> None:
    text = json.dumps([{"InterfaceAlias": "Wi-Fi", "InterfaceIndex": 12, "AddressFamily": 2,
                        "ServerAddresses": ["10.229.128.1"]},
                       {"InterfaceAlias": "Wi-Fi", "InterfaceIndex": 12, "AddressFamily": 23, "ServerAddresses": []}])
    parsed = parsers.dns_server_addresses(parsers.parse_objects(text))
    assert [(d.alias, d.family, d.servers) for d in parsed] == [("Wi-Fi", 4, ("10.229.128.1",)), ("Wi-Fi", 6, ())]


# ------------------------------------------------------------------ the built-in VPN client

def test_vpn_connections_all_users() -> None:
    vpns = parsers.vpn_connections(objects("get_vpnconnection_alluser.txt"))
    assert [(v.name, v.tunnel_type, v.authentication, v.split_tunneling, v.status, v.all_users) for v in vpns] == [
        ("Test5", "L2tp", ("Eap",), True, "Disconnected", True),
        ("Test3", "L2tp", ("Pap",), False, "Disconnected", True),
        ("Test4", "L2tp", ("Eap",), True, "Disconnected", True)]
    assert all(v.always_on is None for v in vpns)  # Get-VpnConnection does not print AlwaysOn here


def test_vpn_connections_become_profiles_and_servers() -> None:
    vpns = parsers.vpn_connections(objects("get_vpnconnection_user.txt"))
    profiles = state.profiles(vpns)
    assert [(p.name, p.kind, p.authentication, p.state) for p in profiles] == [
        ("Test1", "Automatic", ("MsChapv2",), "disconnected"), ("Test6", "Ikev2", ("MachineCertificate",), "disconnected"),
        ("Test7", "Automatic", ("MsChapv2",), "disconnected")]
    assert state.servers(vpns) == ("10.1.1.2", "10.1.1.1")  # "Washington" is a name, resolved on connect
    links = state.links([parsers.IpInterface(40, "Test6", 4, True, 1)], vpns)
    assert links[0].kind == "vti"  # IKEv2: an IPsec tunnel


# ------------------------------------------------------------------ recorded machines, end to end

from leakcheck import engine  # noqa: E402
from leakcheck.config import defaults  # noqa: E402
from leakcheck.platform.windows import WindowsBackend  # noqa: E402

STATES = DATA / "states"


def recorded_windows(name: str) -> tuple[WindowsBackend, RecordedRunner]:
    d = STATES / name
    canary = find_net_route_argv(Query(dst=ipaddress.ip_address("1.1.1.1")))
    runner = RecordedRunner({
        state.NET_IP_INTERFACE: d / "Get-NetIPInterface.json", state.NET_IP_ADDRESS: d / "Get-NetIPAddress.json",
        state.NET_ROUTE: d / "Get-NetRoute.json", state.DNS_SERVERS: d / "Get-DnsClientServerAddress.json",
        state.NRPT_POLICY: d / "Get-DnsClientNrptPolicy.json", state.VPN_CONNECTIONS: d / "Get-VpnConnection.json",
        canary: d / "Find-NetRoute-1.1.1.1.json"})
    return WindowsBackend(runner, read_activity=False, root=False), runner


def run_recorded(name: str):
    backend, runner = recorded_windows(name)
    report = engine.run(defaults(), engine.RunOptions(probes=("routes", "split", "dns", "ipv6"), passive=True),
                        backend=backend)
    return report, runner


def statuses(report) -> dict[str, tuple[str, set[str]]]:
    return {p.probe: (p.status.value, {f.id for f in p.findings}) for p in report.probes}


def test_recorded_full_tunnel_passes() -> None:
    report, runner = run_recorded("full-tunnel")
    assert (report.tunnel.state, report.tunnel.kind, report.tunnel.interfaces) == ("up", "ipsec", ["Test6"])
    got = statuses(report)
    assert report.verdict.value == "pass", got
    assert all(status == "pass" for status, _ in got.values())
    assert got["routes"][1] == {"routes.server-route-any-process"}  # the server's host route, noted
    assert find_net_route_argv(Query(dst=ipaddress.ip_address("1.1.1.1"))) in runner.asked


def test_recorded_split_tunnel_leaks() -> None:
    report, _ = run_recorded("split-tunnel")
    got = statuses(report)
    assert report.verdict.value == "leak"
    assert got["routes"][0] == "leak" and "routes.default-route-outside-tunnel" in got["routes"][1]
    assert got["split"][0] == "leak" and "split.prefixes-outside-tunnel" in got["split"][1]
    assert got["dns"] == ("pass", set()) and got["ipv6"] == ("pass", set())
    finding = next(f for p in report.probes if p.probe == "routes" for f in p.findings
                   if f.id == "routes.default-route-outside-tunnel")
    assert finding.evidence["interface"] == "Wi-Fi" and finding.evidence["gateway"] == "10.229.128.1"


def test_recorded_dns_leak() -> None:
    report, _ = run_recorded("dns-leak")
    got = statuses(report)
    assert got["dns"] == ("leak", {"dns.resolver-outside-tunnel"})
    finding = next(p for p in report.probes if p.probe == "dns").findings[0]
    assert (finding.evidence["resolver"], finding.evidence["link"], finding.evidence["interface"]) == (
        "172.31.232.1", "Ethernet", "Ethernet")
    assert got["routes"][0] == "pass" and got["split"][0] == "pass" and got["ipv6"][0] == "pass"


def test_recorded_ipv6_leak() -> None:
    report, _ = run_recorded("ipv6-leak")
    got = statuses(report)
    assert got["ipv6"] == ("leak", {"ipv6.ipv6-outside-ipv4-only-tunnel"})
    finding = next(p for p in report.probes if p.probe == "ipv6").findings[0]
    assert finding.evidence["interface"] == "Ethernet"
    assert got["routes"][0] == "pass" and got["dns"][0] == "pass"


def test_recorded_state_profiles_servers_and_unread_wfp() -> None:
    backend, _ = recorded_windows("full-tunnel")
    netstate = backend.read_state()
    (profile,) = netstate.vpn_profiles
    assert (profile.name, profile.kind, profile.split_tunneling, profile.connected) == ("Test6", "Ikev2", False, True)
    assert netstate.vpn_servers == ("10.1.1.1",)
    assert any("WFP" in n for n in netstate.notes)


def test_third_party_tunnel_adapters_by_driver_description() -> None:
    """Get-NetAdapter rows written here (JSON as the backend asks for it): the
    descriptions are the drivers' names as Windows lists them."""
    adapters = {int(a["ifIndex"]): a["InterfaceDescription"] for a in parsers.parse_objects(json.dumps([
        {"ifIndex": 7, "Name": "office", "InterfaceDescription": "WireGuard Tunnel", "Status": "Up"},
        {"ifIndex": 9, "Name": "Contoso", "InterfaceDescription": "TAP-Windows Adapter V9", "Status": "Up"},
        {"ifIndex": 12, "Name": "Wi-Fi", "InterfaceDescription": "Intel(R) Wi-Fi 6 AX201 160MHz", "Status": "Up"}]))}
    interfaces = [parsers.IpInterface(7, "office", 4, True, 5), parsers.IpInterface(9, "Contoso", 4, True, 5),
                  parsers.IpInterface(12, "Wi-Fi", 4, True, 35)]
    kinds = {l.name: l.kind for l in state.links(interfaces, [], adapters)}
    assert kinds == {"office": "wireguard", "Contoso": "tun", "Wi-Fi": None}
