"""Parsers for the macOS tools the backend reads. Each takes the tool's text
output and returns plain records; `state.py` turns them into a NetState.

Formats (BSD netstat, route, scutil, ifconfig, pfctl) as macOS 10.x-26
print them; recorded examples with their sources are in
tests/unit/data/macos/.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# ------------------------------------------------------------------ netstat -rn


@dataclass(frozen=True)
class NetstatRoute:
    dst: IPNetwork
    gateway: str | None  # an address, or None when on-link (link#N / MAC)
    flags: str
    netif: str
    link_index: int | None = None  # from a "link#N" gateway

    @property
    def scoped(self) -> bool:
        """RTF_IFSCOPE: used only by sockets bound to `netif`, not for ordinary traffic."""
        return "I" in self.flags

    @property
    def link_layer(self) -> bool:
        """An ARP/ND cache entry (RTF_LLINFO), not a route anyone configured."""
        return "L" in self.flags

    @property
    def kind(self) -> str:
        if "B" in self.flags:
            return "blackhole"
        if "R" in self.flags:
            return "unreachable"
        if "b" in self.flags:
            return "broadcast"
        if "m" in self.flags:
            return "multicast"
        return "unicast"


def bsd_prefix(text: str, family: int) -> IPNetwork:
    """netstat's abbreviated destinations: 'default', '127', '169.254',
    '10/16', '128.0/1', '192.168.1.1', 'fe80::%lo0/64'."""
    if text == "default":
        return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    addr, _, length = text.partition("/")
    addr = addr.split("%", 1)[0]
    if family == 4:
        octets = addr.split(".")
        bits = int(length) if length else 8 * len(octets)
        padded = ".".join(octets + ["0"] * (4 - len(octets)))
        return ipaddress.ip_network(f"{padded}/{bits}", strict=False)
    bits = int(length) if length else 128
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def parse_netstat_routes(text: str) -> list[NetstatRoute]:
    routes: list[NetstatRoute] = []
    family: int | None = None
    netif_col = 3
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Internet6"):
            family = 6
            continue
        if stripped.startswith("Internet"):
            family = 4
            continue
        if not stripped or family is None:
            continue
        cols = stripped.split()
        if cols[0] == "Destination":
            netif_col = cols.index("Netif")
            continue
        if len(cols) <= netif_col:
            continue
        dest, gateway, flags, netif = cols[0], cols[1], cols[2], cols[netif_col]
        try:
            dst = bsd_prefix(dest, family)
        except ValueError:
            continue  # not a route line
        link_index = None
        gw: str | None = gateway
        if gateway.startswith("link#"):
            link_index, gw = int(gateway[5:]), None
        elif "G" not in flags:
            gw = None  # a MAC address or the interface's own address: on-link
        else:
            gw = gateway.split("%", 1)[0]
        routes.append(NetstatRoute(dst, gw, flags, netif, link_index))
    return routes

# ------------------------------------------------------------------ route -n get


@dataclass(frozen=True)
class RouteGet:
    destination: IPNetwork
    gateway: str | None
    interface: str | None
    flags: tuple[str, ...]

    @property
    def kind(self) -> str:
        if "BLACKHOLE" in self.flags:
            return "blackhole"
        if "REJECT" in self.flags:
            return "unreachable"
        return "unicast"


def parse_route_get(text: str, family: int) -> RouteGet:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("route to", "destination", "mask", "gateway", "interface", "flags"):
            fields[key.strip()] = value.strip()
    if "destination" not in fields:
        raise ValueError("no 'destination:' line in route get output")
    dest, mask = fields["destination"], fields.get("mask")
    if dest == "default":
        dst = bsd_prefix("default", family)
    else:
        addr = dest.split("%", 1)[0]
        if mask is None:
            dst = ipaddress.ip_network(addr)
        elif mask == "default":
            dst = ipaddress.ip_network(f"{addr}/0", strict=False)
        else:
            dst = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
    flags = tuple(f for f in fields.get("flags", "").strip("<>").split(",") if f)
    gateway = fields.get("gateway")
    if gateway is not None and "GATEWAY" not in flags:
        gateway = None  # on-link: route get names the interface's own address here
    return RouteGet(dst, gateway.split("%", 1)[0] if gateway else None, fields.get("interface"), flags)

# ------------------------------------------------------------------ scutil --dns


@dataclass(frozen=True)
class ScutilResolver:
    nameservers: tuple[str, ...]
    domain: str | None = None  # a supplemental (match) domain
    search: tuple[str, ...] = ()
    if_index: int | None = None
    ifname: str | None = None
    flags: tuple[str, ...] = ()
    order: int | None = None
    options: str | None = None  # "mdns" for the multicast DNS resolvers
    scoped_section: bool = False  # listed under "for scoped queries"

    @property
    def scoped(self) -> bool:
        return self.scoped_section or "Scoped" in self.flags

    @property
    def mdns(self) -> bool:
        return self.options is not None and "mdns" in self.options


def parse_scutil_dns(text: str) -> list[ScutilResolver]:
    out: list[ScutilResolver] = []
    current: dict | None = None
    scoped_section = False

    def flush() -> None:
        if current is not None:
            out.append(ScutilResolver(nameservers=tuple(current["ns"]), domain=current.get("domain"),
                                      search=tuple(current["search"]), if_index=current.get("if_index"),
                                      ifname=current.get("ifname"), flags=tuple(current.get("flags", ())),
                                      order=current.get("order"), options=current.get("options"),
                                      scoped_section=scoped_section))

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("DNS configuration"):
            flush()
            current = None
            scoped_section = "scoped" in stripped
            continue
        if stripped.startswith("resolver #"):
            flush()
            current = {"ns": [], "search": []}
            continue
        if current is None or ":" not in stripped:
            continue
        key, _, value = (part.strip() for part in stripped.partition(":"))
        if key.startswith("nameserver["):
            current["ns"].append(value.split("%", 1)[0])
        elif key.startswith("search domain["):
            current["search"].append(value)
        elif key == "domain":
            current["domain"] = value
        elif key == "if_index":
            m = re.match(r"(\d+)\s*(?:\((\S+)\))?", value)
            if m:
                current["if_index"], current["ifname"] = int(m.group(1)), m.group(2)
        elif key == "flags":
            current["flags"] = [f.strip() for f in value.split(",") if f.strip()]
        elif key == "order":
            current["order"] = int(value) if value.isdigit() else None
        elif key == "options":
            current["options"] = value
    flush()
    return out

# ------------------------------------------------------------------ scutil --nc list

NC_LINE = re.compile(r"^\s*(?P<enabled>\*)?\s*\((?P<state>[^)]+)\)\s+(?P<rest>.*?)\s*$")
NC_ID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\s+")


@dataclass(frozen=True)
class NcService:
    name: str
    state: str  # Connected, Disconnected, Connecting, ...
    kind: str  # the bracketed type: IPSec, PPP:L2TP, VPN:com.wireguard.macos ...
    enabled: bool
    service_id: str | None = None


def parse_scutil_nc_list(text: str) -> list[NcService]:
    services = []
    for line in text.splitlines():
        m = NC_LINE.match(line)
        if not m:
            continue
        rest = m.group("rest")
        service_id = None
        id_match = NC_ID.match(rest)
        if id_match:
            service_id, rest = id_match.group(0).strip(), rest[id_match.end():]
        kind_match = re.search(r"\[([^\]]+)\]\s*$", rest)
        kind = kind_match.group(1) if kind_match else ""
        rest = rest[:kind_match.start()].strip() if kind_match else rest
        quoted = re.search(r'"([^"]*)"', rest)
        name = quoted.group(1) if quoted else rest.strip()
        services.append(NcService(name=name, state=m.group("state").strip(), kind=kind,
                                  enabled=bool(m.group("enabled")), service_id=service_id))
    return services

# ------------------------------------------------------------------ ifconfig


@dataclass
class IfconfigInterface:
    name: str
    flags: tuple[str, ...]
    mtu: int | None = None
    index: int | None = None  # from an IPv6 scopeid, when shown
    status: str | None = None  # active / inactive (media interfaces only)
    inet: list[tuple[str, int, str | None]] = field(default_factory=list)  # (address, prefixlen, peer)
    inet6: list[tuple[str, int]] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return "UP" in self.flags

    @property
    def running(self) -> bool:
        return "RUNNING" in self.flags and self.status != "inactive"


IF_HEADER = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+): flags=[0-9a-f]+<(?P<flags>[^>]*)>(?: mtu (?P<mtu>\d+))?")


def _mask_bits(mask: str) -> int:
    if mask.startswith("0x"):
        return bin(int(mask, 16)).count("1")
    return ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen


def parse_ifconfig(text: str) -> list[IfconfigInterface]:
    interfaces: list[IfconfigInterface] = []
    current: IfconfigInterface | None = None
    for line in text.splitlines():
        header = IF_HEADER.match(line)
        if header:
            current = IfconfigInterface(name=header.group("name"),
                                        flags=tuple(f for f in header.group("flags").split(",") if f),
                                        mtu=int(header.group("mtu")) if header.group("mtu") else None)
            interfaces.append(current)
            continue
        if current is None:
            continue
        words = line.split()
        if not words:
            continue
        if words[0] == "inet" and len(words) >= 2:
            peer = words[words.index("-->") + 1] if "-->" in words else None
            bits = _mask_bits(words[words.index("netmask") + 1]) if "netmask" in words else 32
            current.inet.append((words[1], bits, peer))
        elif words[0] == "inet6" and len(words) >= 2:
            bits = int(words[words.index("prefixlen") + 1]) if "prefixlen" in words else 128
            current.inet6.append((words[1].split("%", 1)[0], bits))
            if "scopeid" in words:
                current.index = int(words[words.index("scopeid") + 1], 16)
        elif words[0] == "status:" and len(words) >= 2:
            current.status = words[1]
    return interfaces

# ------------------------------------------------------------------ pfctl -sr


@dataclass(frozen=True)
class PfRule:
    text: str
    action: str  # pass | block | anchor | scrub ...
    direction: str | None  # in | out | None (both)
    quick: bool
    interfaces: tuple[str, ...]
    family: str | None  # inet | inet6 | None
    protos: tuple[str, ...]
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    opaque: tuple[str, ...]  # parts not interpreted (ports, tables, user, route-to, ...)


def _pf_list(words: list[str], i: int) -> tuple[tuple[str, ...], int]:
    """One pf operand or a `{ a, b }` list starting at words[i]."""
    if words[i] != "{":
        return (words[i],), i + 1
    j = words.index("}", i)
    return tuple(w.strip(",") for w in words[i + 1:j] if w.strip(",")), j + 1


def parse_pfctl_rules(text: str) -> list[PfRule]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("No ALTQ", "ALTQ", "#")):
            continue
        words = line.replace("{", " { ").replace("}", " } ").split()
        action = words[0]
        direction = None
        quick = False
        ifaces: tuple[str, ...] = ()
        family = None
        protos: tuple[str, ...] = ()
        src: tuple[str, ...] = ()
        dst: tuple[str, ...] = ()
        opaque: list[str] = []
        i = 1
        if action in ("block", "pass") and i < len(words) and words[i] in ("drop", "return"):
            i += 1
        while i < len(words):
            word = words[i]
            if word in ("in", "out"):
                direction, i = word, i + 1
            elif word == "quick":
                quick, i = True, i + 1
            elif word == "on" and i + 1 < len(words):
                ifaces, i = _pf_list(words, i + 1)
            elif word in ("inet", "inet6"):
                family, i = word, i + 1
            elif word == "proto" and i + 1 < len(words):
                protos, i = _pf_list(words, i + 1)
            elif word == "from" and i + 1 < len(words):
                src, i = _pf_list(words, i + 1)
            elif word == "to" and i + 1 < len(words):
                dst, i = _pf_list(words, i + 1)
            elif word in ("all", "log", "keep", "state", "flags", "S/SA", "modulate", "synproxy", "label"):
                i += 1
            else:
                opaque.append(word)
                i += 1
        rules.append(PfRule(line, action, direction, quick, ifaces, family, protos, src, dst, tuple(opaque)))
    return rules
