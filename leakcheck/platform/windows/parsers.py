"""Parsers for the PowerShell cmdlets the Windows backend reads.

The backend asks for JSON (`... | Select-Object <props> | ConvertTo-Json`),
where enums arrive as numbers; PowerShell's default list view
(`Format-List`, what documentation and bug reports show) gives the same
objects with enum names. Both become the same plain dicts here.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

ADDRESS_FAMILY = {2: 4, 23: 6, "IPv4": 4, "IPv6": 6, "InterNetwork": 4, "InterNetworkV6": 6}
CONNECTION_STATE = {0: "Disconnected", 1: "Connected", "Disconnected": "Disconnected",
                    "Connected": "Connected"}
# MSFT_NetRoute.Protocol (the MIB_IPFORWARD_PROTO numbers)
ROUTE_PROTOCOL = {1: "Other", 2: "Local", 3: "NetMgmt", 4: "Icmp", 5: "Egp", 6: "Ggp", 7: "Hello", 8: "Rip",
                  9: "IsIs", 10: "EsIs", 11: "Igrp", 12: "Bbn", 13: "Ospf", 14: "Bgp", 15: "Idpr", 16: "Eigrp",
                  17: "Dvmrp", 18: "Rpl", 19: "Dhcp"}
VPN_TUNNEL_TYPE = {0: "Pptp", 1: "L2tp", 2: "Sstp", 3: "Ikev2", 4: "Automatic"}


def parse_json(text: str) -> list[dict[str, Any]]:
    """ConvertTo-Json prints one object bare and several as a list (and nothing for none)."""
    text = text.strip().lstrip("\ufeff")
    if not text:
        return []
    data = json.loads(text)
    return [data] if isinstance(data, dict) else list(data)


def parse_format_list(text: str) -> list[dict[str, Any]]:
    """`Format-List` text: `Name : value` lines, objects separated by blank
    lines; `{a, b}` values are lists; continuation lines (long values wrapped
    by the console, indented under the value column) are joined first."""
    objects: list[dict[str, Any]] = []
    current: dict[str, str] = {}
    last: str | None = None

    def flush() -> None:
        if current:
            objects.append({k: _list_value(v) for k, v in current.items()})

    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("PS ") and ">" in line:
            continue  # a prompt line in a pasted transcript
        if not line.strip():
            flush()
            current, last = {}, None
            continue
        name, sep, value = line.partition(" : ")
        if not sep and line.endswith(" :"):
            name, sep, value = line[:-2], " :", ""
        if sep and name.strip() and " " not in name.strip() and not raw.startswith(" " * 8):
            last = name.strip()
            current[last] = value.strip()
        elif last is not None and raw.startswith(" "):
            joiner = " " if current[last].endswith(",") else ""
            current[last] = f"{current[last]}{joiner}{line.strip()}"
    flush()
    return objects


def _list_value(value: str) -> Any:
    if value.startswith("{") and value.endswith("}"):
        inner = value[1:-1].strip()
        return [v.strip() for v in inner.split(",") if v.strip()] if inner else []
    return value


def parse_objects(text: str) -> list[dict[str, Any]]:
    stripped = text.strip().lstrip("\ufeff")
    if stripped.startswith(("{", "[")):
        return parse_json(stripped)
    return parse_format_list(text)


def family(obj: dict[str, Any]) -> int | None:
    value = obj.get("AddressFamily")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return ADDRESS_FAMILY.get(value)  # type: ignore[arg-type]


def integer(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]

# ------------------------------------------------------------------ routes and interfaces


@dataclass(frozen=True)
class NetRoute:
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    next_hop: str | None  # None: on-link (0.0.0.0 / ::)
    ifindex: int
    alias: str | None
    metric: int
    protocol: str | None


def net_routes(objects: list[dict[str, Any]]) -> list[NetRoute]:
    out = []
    for obj in objects:
        if not obj.get("DestinationPrefix"):
            continue  # Select-Object gives the other object kinds null properties
        hop = str(obj.get("NextHop") or "")
        protocol = obj.get("Protocol")
        out.append(NetRoute(prefix=ipaddress.ip_network(obj["DestinationPrefix"], strict=False),
                            next_hop=None if hop in ("", "0.0.0.0", "::") else hop,
                            ifindex=integer(obj.get("InterfaceIndex", obj.get("ifIndex"))),
                            alias=obj.get("InterfaceAlias"), metric=integer(obj.get("RouteMetric")),
                            protocol=ROUTE_PROTOCOL.get(protocol, protocol) if protocol is not None else None))
    return out


@dataclass(frozen=True)
class IpInterface:
    ifindex: int
    alias: str
    family: int | None
    connected: bool
    metric: int


def ip_interfaces(objects: list[dict[str, Any]]) -> list[IpInterface]:
    out = []
    for obj in objects:
        if not obj.get("InterfaceAlias"):
            continue
        state = obj.get("ConnectionState")
        state = integer(state, -1) if isinstance(state, (int, float)) or str(state).isdigit() else state
        out.append(IpInterface(ifindex=integer(obj.get("InterfaceIndex", obj.get("ifIndex"))),
                               alias=str(obj["InterfaceAlias"]), family=family(obj),
                               connected=CONNECTION_STATE.get(state) == "Connected",
                               metric=integer(obj.get("InterfaceMetric"))))
    return out


@dataclass(frozen=True)
class IpAddress:
    address: str
    prefixlen: int
    ifindex: int
    alias: str | None


def ip_addresses(objects: list[dict[str, Any]]) -> list[IpAddress]:
    return [IpAddress(address=str(o["IPAddress"]).split("%", 1)[0], prefixlen=integer(o.get("PrefixLength")),
                      ifindex=integer(o.get("InterfaceIndex", o.get("ifIndex"))), alias=o.get("InterfaceAlias"))
            for o in objects if o.get("IPAddress")]

# ------------------------------------------------------------------ Find-NetRoute


@dataclass(frozen=True)
class BestRoute:
    route: NetRoute
    source: str | None  # the local address Windows would use


def find_net_route(objects: list[dict[str, Any]]) -> BestRoute:
    """Find-NetRoute returns the local address (MSFT_NetIPAddress) and then
    the route (MSFT_NetRoute) it chose."""
    routes = net_routes(objects)
    if not routes:
        raise ValueError("Find-NetRoute returned no route")
    source = next((str(o["IPAddress"]).split("%", 1)[0] for o in objects if o.get("IPAddress")), None)
    return BestRoute(routes[0], source)

# ------------------------------------------------------------------ DNS


@dataclass(frozen=True)
class InterfaceDns:
    alias: str
    ifindex: int
    family: int | None
    servers: tuple[str, ...]


def dns_server_addresses(objects: list[dict[str, Any]]) -> list[InterfaceDns]:
    return [InterfaceDns(alias=str(o.get("InterfaceAlias")), ifindex=integer(o.get("InterfaceIndex")),
                         family=family(o), servers=tuple(as_list(o.get("ServerAddresses"))))
            for o in objects if "ServerAddresses" in o]


@dataclass(frozen=True)
class NrptRule:
    namespace: str  # ".corp.example", or "." for every name
    name_servers: tuple[str, ...]
    direct_access: bool = False


def nrpt_policies(objects: list[dict[str, Any]]) -> list[NrptRule]:
    out = []
    for obj in objects:
        namespace = obj.get("Namespace")
        if namespace is None:
            continue
        servers = as_list(obj.get("NameServers"))
        direct_access = not servers and bool(as_list(obj.get("DirectAccessDnsServers")))
        if direct_access:  # a DirectAccess rule: its own servers, used while off the corporate network
            servers = as_list(obj.get("DirectAccessDnsServers"))
        for ns in as_list(namespace):
            out.append(NrptRule(namespace=ns, name_servers=tuple(servers), direct_access=direct_access))
    return out

# ------------------------------------------------------------------ the built-in VPN client


@dataclass(frozen=True)
class VpnConnection:
    name: str
    server: str | None
    tunnel_type: str | None
    authentication: tuple[str, ...]
    split_tunneling: bool | None
    always_on: bool | None
    status: str
    all_users: bool | None


def vpn_connections(objects: list[dict[str, Any]]) -> list[VpnConnection]:
    out = []
    for obj in objects:
        if "Name" not in obj or "ServerAddress" not in obj:
            continue
        tunnel = obj.get("TunnelType")
        tunnel = VPN_TUNNEL_TYPE.get(tunnel, tunnel) if tunnel is not None else None
        out.append(VpnConnection(name=str(obj["Name"]), server=obj.get("ServerAddress") or None,
                                 tunnel_type=str(tunnel) if tunnel is not None else None,
                                 authentication=tuple(as_list(obj.get("AuthenticationMethod"))),
                                 split_tunneling=boolean(obj.get("SplitTunneling")),
                                 always_on=boolean(obj.get("AlwaysOn")),
                                 status=str(obj.get("ConnectionStatus") or "Unknown"),
                                 all_users=boolean(obj.get("AllUserConnection"))))
    return out
