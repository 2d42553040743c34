"""Build a NetState from the Windows cmdlets' output (through one Runner)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Callable

from leakcheck.netstate import (MAIN_TABLE, Activity, Address, Firewall, Link, NetState, Nexthop, Resolver,
                                Route, VpnProfile)
from leakcheck.errors import NetStateError
from leakcheck.platform.commands import CommandFailed, Runner
from leakcheck.platform.windows import parsers

log = logging.getLogger(__name__)


def powershell(script: str) -> tuple[str, ...]:
    return ("powershell.exe", "-NoLogo", "-NoProfile", "-NonInteractive", "-Command", script)


def as_json(cmdlet: str, props: str) -> tuple[str, ...]:
    # Select-Object keeps the JSON to the properties read here (CIM objects
    # carry dozens more); -Depth 3 keeps ServerAddresses lists as lists.
    return powershell(f"{cmdlet} | Select-Object {props} | ConvertTo-Json -Depth 3")


NET_ROUTE = as_json("Get-NetRoute -PolicyStore ActiveStore",
                    "DestinationPrefix,NextHop,InterfaceIndex,InterfaceAlias,RouteMetric,Protocol,AddressFamily")
NET_IP_INTERFACE = as_json("Get-NetIPInterface",
                           "InterfaceIndex,InterfaceAlias,AddressFamily,ConnectionState,InterfaceMetric")
NET_IP_ADDRESS = as_json("Get-NetIPAddress", "IPAddress,PrefixLength,InterfaceIndex,InterfaceAlias,AddressFamily")
DNS_SERVERS = as_json("Get-DnsClientServerAddress", "InterfaceAlias,InterfaceIndex,AddressFamily,ServerAddresses")
NRPT_POLICY = as_json("Get-DnsClientNrptPolicy", "Namespace,NameServers,DirectAccessEnabled")
NET_ADAPTERS = as_json("Get-NetAdapter -IncludeHidden", "ifIndex,Name,InterfaceDescription,Status")
VPN_CONNECTIONS = as_json("Get-VpnConnection -AllUserConnection",
                          "Name,ServerAddress,TunnelType,AuthenticationMethod,SplitTunneling,"
                          "ConnectionStatus,AllUserConnection,AlwaysOn")  # AlwaysOn: null where absent

# Third-party clients name their adapter after the tunnel ("office", "Contoso"):
# the driver's description tells what it is.
ADAPTER_KINDS = (("wireguard", "wireguard"), ("wintun", "tun"), ("tap-windows", "tun"),
                 ("openvpn", "tun"), ("tap-", "tun"), ("anyconnect", "tun"), ("pangp", "tun"),
                 ("fortinet ssl vpn", "tun"), ("juniper networks virtual adapter", "tun"),
                 ("wan miniport", "ppp"))
# Built-in VPN tunnel types: IKEv2 and L2TP are IPsec; SSTP and PPTP carry PPP.
TUNNEL_KIND = {"Ikev2": "vti", "L2tp": "vti", "Sstp": "ppp", "Pptp": "ppp", "Automatic": "ppp"}
LOOPBACK_ALIAS = "Loopback Pseudo-Interface"


def adapter_kind(description: str) -> str | None:
    lowered = description.lower()
    return next((kind for needle, kind in ADAPTER_KINDS if needle in lowered), None)


def links(interfaces: list[parsers.IpInterface], vpns: list[parsers.VpnConnection],
          adapters: dict[int, str] | None = None) -> tuple[Link, ...]:
    """One Link per interface index (Get-NetIPInterface lists one row per
    family). The built-in VPN's interface is named after its connection;
    other clients' adapters are known by their driver description."""
    vpn_kinds = {v.name: TUNNEL_KIND.get(v.tunnel_type or "", "ppp") for v in vpns}
    adapters = adapters or {}
    by_index: dict[int, Link] = {}
    for iface in interfaces:
        connected = iface.connected or (by_index[iface.ifindex].oper_state == "UP"
                                        if iface.ifindex in by_index else False)
        kind = ("loopback" if iface.alias.startswith(LOOPBACK_ALIAS) else vpn_kinds.get(iface.alias)
                or adapter_kind(adapters.get(iface.ifindex, "")))
        by_index[iface.ifindex] = Link(index=iface.ifindex, name=iface.alias, kind=kind, admin_up=True,
                                       oper_state="UP" if connected else "DOWN")
    return tuple(sorted(by_index.values(), key=lambda l: l.index))


def addresses(parsed: list[parsers.IpAddress], link_list: tuple[Link, ...]) -> tuple[Address, ...]:
    names = {l.index: l.name for l in link_list}
    out = []
    for entry in parsed:
        ip = ipaddress.ip_address(entry.address)
        scope = 254 if ip.is_loopback else 253 if ip.is_link_local else 0
        out.append(Address(entry.ifindex, names.get(entry.ifindex, entry.alias or str(entry.ifindex)), ip,
                           entry.prefixlen, scope))
    return tuple(out)


def routes(parsed: list[parsers.NetRoute], link_list: tuple[Link, ...]) -> tuple[Route, ...]:
    names = {l.index: l.name for l in link_list}
    loopback = {l.index for l in link_list if l.kind == "loopback"}
    out = []
    for entry in parsed:
        if entry.prefix.is_multicast or (entry.prefix.version == 4 and str(entry.prefix) == "255.255.255.255/32"):
            rtype = "multicast" if entry.prefix.is_multicast else "broadcast"
        else:
            rtype = "local" if entry.ifindex in loopback else "unicast"
        protocol = {"Dhcp": "dhcp", "NetMgmt": "static", "Local": "kernel"}.get(entry.protocol or "", "kernel")
        out.append(Route(dst=entry.prefix, table=MAIN_TABLE, type=rtype, protocol=protocol, scope=0,
                         nexthops=(Nexthop(entry.ifindex, names.get(entry.ifindex, entry.alias), entry.next_hop),),
                         metric=entry.metric))
    return tuple(out)


def resolvers(servers: list[parsers.InterfaceDns], nrpt: list[parsers.NrptRule],
              link_list: tuple[Link, ...], notes: list[str]) -> tuple[Resolver, ...]:
    """Windows sends a query to the DNS servers of every connected interface
    (smart multi-homed name resolution), so each is a resolver for any name,
    unless an NRPT rule for "." sends every name to its own servers."""
    out: list[Resolver] = []
    catch_all = [r for r in nrpt if r.namespace == "." and r.name_servers]
    for rule in nrpt:
        for ns in rule.name_servers:
            try:
                address = ipaddress.ip_address(ns)
            except ValueError:
                continue  # a proxy name (DirectAccess): not an address to route
            # "link" NRPT: a rule, not an interface, decides which names reach it
            out.append(Resolver(address=address, source="NRPT", link="NRPT",
                                domains=() if rule.namespace == "." else (rule.namespace,),
                                default_route=rule.namespace == "."))
    connected = {l.name for l in link_list if l.usable}
    skipped = []
    for entry in servers:
        if entry.alias not in connected:
            continue
        for ns in entry.servers:
            address = ipaddress.ip_address(ns.split("%", 1)[0])
            if catch_all:
                skipped.append(f"{ns} ({entry.alias})")
                continue
            resolver = Resolver(address=address, source="Get-DnsClientServerAddress", link=entry.alias,
                                default_route=True)
            if resolver not in out:
                out.append(resolver)
    if skipped:
        notes.append("interface DNS servers not used for names the NRPT '.' rule covers: " + ", ".join(skipped))
    return tuple(_catch_all_first(out))


def _catch_all_first(found: list[Resolver]) -> list[Resolver]:
    return sorted(found, key=lambda r: 0 if r.takes_any_query else 1)


def profiles(vpns: list[parsers.VpnConnection]) -> tuple[VpnProfile, ...]:
    return tuple(VpnProfile(name=v.name, source="Get-VpnConnection", state=v.status.lower(), kind=v.tunnel_type,
                            server=v.server, split_tunneling=v.split_tunneling, always_on=v.always_on,
                            authentication=v.authentication, all_users=v.all_users) for v in vpns)


def servers(vpns: list[parsers.VpnConnection]) -> tuple[str, ...]:
    out = []
    for vpn in vpns:
        try:
            out.append(str(ipaddress.ip_address(vpn.server or "")))
        except ValueError:
            continue  # a host name: resolved only when the client connects
    return tuple(out)


def read(runner: Runner, activity: Callable[[list[str]], Activity | None] | None = None) -> NetState:
    """The whole state; without the routing table and the interfaces there is
    nothing to judge (NetStateError, exit 3), other parts are notes."""
    try:
        return _read(runner, activity)
    except CommandFailed as exc:
        raise NetStateError(f"the network state could not be read: {exc}") from exc


def _read(runner: Runner, activity: Callable[[list[str]], Activity | None] | None) -> NetState:
    notes: list[str] = []
    vpns = _optional(runner, VPN_CONNECTIONS, parsers.vpn_connections, notes) or []
    adapters = {parsers.integer(a.get("ifIndex")): str(a.get("InterfaceDescription") or "")
                for a in _optional(runner, NET_ADAPTERS, lambda objs: objs, notes) or []}
    link_list = links(parsers.ip_interfaces(parsers.parse_objects(runner.run(NET_IP_INTERFACE))), vpns, adapters)
    address_list = addresses(parsers.ip_addresses(parsers.parse_objects(runner.run(NET_IP_ADDRESS))), link_list)
    route_list = routes(parsers.net_routes(parsers.parse_objects(runner.run(NET_ROUTE))), link_list)
    dns = _optional(runner, DNS_SERVERS, parsers.dns_server_addresses, notes) or []
    nrpt = _optional(runner, NRPT_POLICY, parsers.nrpt_policies, notes) or []
    return NetState(links=link_list, addresses=address_list, routes=route_list,
                    resolvers=resolvers(dns, nrpt, link_list, notes),
                    notes=tuple(notes + ["WFP filters: not read (no supported reader yet); a WFP kill "
                                         "switch is invisible to leakcheck on Windows"]),
                    firewall=Firewall(unreadable=("WFP filters are not read yet",)),
                    activity=activity(notes) if activity is not None else None,
                    vpn_profiles=profiles(vpns), vpn_servers=servers(vpns))


def _optional(runner: Runner, argv: tuple[str, ...], parse: Callable, notes: list[str]):
    try:
        return parse(parsers.parse_objects(runner.run(argv)))
    except (CommandFailed, ValueError) as exc:
        log.debug("%s failed", argv[-1], exc_info=True)
        notes.append(f"{argv[-1].split(' |')[0]}: not read ({exc})")
        return None
