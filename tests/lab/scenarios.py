"""Scenarios as data: a style (a correct full tunnel) plus zero or more faults.

A scenario is written "style+fault+fault", e.g. "def1+tunnelvision". Each
style and each fault is a `Knob`: a docstring and a list of steps, applied
in order to a freshly reset laptop. A step is either

- a command string "[ns:] command": ns is lap (default), isp or vpn;
  "ip ..." runs as `ip -n NS ...`, anything else as `ip netns exec NS ...`;
  every step must succeed (a failing step fails the reset, loudly), or
- a callable `step(lab)` for what a command line cannot say.

`undo` steps run when the scenario ends (errors tolerated): only needed for
changes outside the laptop namespace that do not vanish with it.

Adding a fault is one entry in FAULTS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from tests.lab import (CORP_PREFIXES, CORP_RESOLVER, LAN_ROUTER, LAN_ROUTER_V6, LAPTOP_LAN, LAPTOP_LAN_V6,
                       VPN_PORT, VPN_SERVER, VPN_SERVER_V6)

if TYPE_CHECKING:
    from tests.lab.topology import Lab

Step = Union[str, Callable[["Lab"], None]]
WG_QUICK_TABLE = 51820
WG_QUICK_FWMARK = 51820


class ScenarioError(ValueError):
    """A scenario names an unknown style or fault, or a fault that cannot apply to the style."""


@dataclass(frozen=True)
class Knob:
    doc: str
    steps: tuple[Step, ...]
    undo: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Scenario:
    style: str = "wg-quick"
    faults: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: "str | Scenario | tuple | list | None" = None, *faults: str) -> "Scenario":
        """"def1+tunnelvision", ("def1", "tunnelvision"), Scenario(...) or None (wg-quick)."""
        if isinstance(spec, Scenario):
            style, more = spec.style, list(spec.faults)
        elif spec is None:
            style, more = "wg-quick", []
        elif isinstance(spec, str):
            style, *more = [part.strip() for part in spec.split("+")]
        else:
            style, *more = list(spec)
        scenario = cls(style, tuple(more) + tuple(faults))
        scenario.validate()
        return scenario

    def validate(self) -> None:
        if self.style not in STYLES:
            raise ScenarioError(f"unknown style {self.style!r} (known: {', '.join(STYLES)})")
        for fault in self.faults:
            if fault not in FAULTS:
                raise ScenarioError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")

    @property
    def has_tunnel_interface(self) -> bool:
        return self.style not in ("ipsec", "none")

    def __str__(self) -> str:
        return "+".join((self.style, *self.faults))


# ---------------------------------------------------------------- step helpers

def resolv(*servers: str) -> Step:
    def write(lab: "Lab") -> None:
        lab.write_resolv(*servers)
    write.__name__ = f"resolv({', '.join(servers)})"
    return write


def sysctl(key: str, value: object) -> Step:
    def write(lab: "Lab") -> None:
        lab.sysctl("lap", key, value)
    write.__name__ = f"sysctl({key}={value})"
    return write


def laptop_tunnel(lab: "Lab") -> None:
    """wireguard-go wg0 peered with the gateway's wgvpn, 100.100.0.2/24 + fd00:100::2/64, up."""
    lab.start_laptop_tunnel()


def _needs(lab: "Lab", fault: str, *styles: str) -> str:
    style = lab.scenario.style if lab.scenario else "?"
    if style not in styles:
        raise ScenarioError(f"fault {fault!r} does not apply to style {style!r} (only {', '.join(styles)})")
    return style


# ---------------------------------------------------------------- IPsec policies as data

@dataclass(frozen=True)
class Policy:
    dir: str
    src: str
    dst: str
    priority: int
    tmpl: str = ""  # empty: no template, i.e. a bypass (allow) policy
    upper: str = ""  # upper-layer selector, e.g. "proto ipv6-icmp type 135"

    def selector(self) -> str:
        return " ".join(filter(None, (f"src {self.src} dst {self.dst}", self.upper, f"dir {self.dir}")))

    def add(self) -> str:
        tmpl = f" tmpl {self.tmpl}" if self.tmpl else ""
        return f"ip xfrm policy add {self.selector()} priority {self.priority}{tmpl}"

    def delete(self) -> str:
        return f"ip xfrm policy delete {self.selector()}"


ANY = {4: "0.0.0.0/0", 6: "::/0"}
_ESP_OUT = {4: f"src {LAPTOP_LAN} dst {VPN_SERVER} proto esp mode tunnel",
            6: f"src {LAPTOP_LAN_V6} dst {VPN_SERVER_V6} proto esp mode tunnel"}
_ESP_IN = {4: f"src {VPN_SERVER} dst {LAPTOP_LAN} proto esp mode tunnel",
           6: f"src {VPN_SERVER_V6} dst {LAPTOP_LAN_V6} proto esp mode tunnel"}


def covering_policies(*prefixes: str) -> list[Policy]:
    """out/in/fwd policies sending traffic to/from `prefixes` through the ESP tunnel."""
    out = []
    for prefix in prefixes:
        version = ipaddress.ip_network(prefix).version
        out.append(Policy("out", ANY[version], prefix, 100, _ESP_OUT[version]))
        out.append(Policy("in", prefix, ANY[version], 100, _ESP_IN[version]))
        out.append(Policy("fwd", prefix, ANY[version], 100, _ESP_IN[version]))
    return out


def bypass_policies(*prefixes: str) -> list[Policy]:
    """Policies letting traffic to/from `prefixes` pass in clear (IKE to the gateway, exceptions)."""
    out = []
    for prefix in prefixes:
        version = ipaddress.ip_network(prefix).version
        out.append(Policy("out", ANY[version], prefix, 10))
        out.append(Policy("in", prefix, ANY[version], 10))
    return out


# Neighbour discovery must stay in clear or IPv6 on the LAN stops working at all.
ND_BYPASS = [Policy(direction, "::/0", "::/0", 1, upper=f"proto ipv6-icmp type {icmp_type}")
             for icmp_type in (133, 134, 135, 136) for direction in ("out", "in")]
IPSEC_FULL = covering_policies(ANY[4], ANY[6]) + bypass_policies(f"{VPN_SERVER}/32", f"{VPN_SERVER_V6}/128")


def _is_v6(policy: Policy) -> bool:
    return ":" in policy.src or ":" in policy.dst


# ---------------------------------------------------------------- route surgery for faults

def drop_tunnel_routes(lab: "Lab", families: tuple[int, ...] = (4, 6)) -> None:
    """Remove every route via wg0 (but its connected ones) and wg-quick's rules, in all
    tables; give main back its default via eth0 where that went."""
    for family in families:
        if lab.link_exists("wg0"):
            for route in lab.ip_json(f"-{family} route show table all dev wg0"):
                table = str(route.get("table", "main"))
                if route.get("protocol") == "kernel" or table == "local" or route.get("type") not in (None, "unicast"):
                    continue
                lab.ip(f"-{family} route del {route['dst']} dev wg0 table {table}")
        for rule in lab.ip_json(f"-{family} rule show"):
            if str(rule.get("table")) == str(WG_QUICK_TABLE) or "suppress_prefixlen" in rule:
                lab.ip(f"-{family} rule del priority {rule['priority']}")
        if not any(r.get("dst") == "default" for r in lab.ip_json(f"-{family} route show table main")):
            gateway = LAN_ROUTER if family == 4 else LAN_ROUTER_V6
            lab.ip(f"-{family} route add default via {gateway} dev eth0")


def _split(lab: "Lab") -> None:
    style = _needs(lab, "split", "wg-quick", "def1", "default", "ipsec")
    if style == "ipsec":
        for policy in covering_policies(ANY[4], ANY[6]):
            lab.step(policy.delete())
        for policy in covering_policies(*CORP_PREFIXES):
            lab.step(policy.add())
        return
    drop_tunnel_routes(lab)
    for prefix in CORP_PREFIXES:
        # 100.100.0.0/24 and fd00:100::/64 are wg0's connected routes already.
        if not lab.ip_json(f"route show table main exact {prefix} dev wg0"):
            lab.ip(f"route add {prefix} dev wg0")
    lab.exec(["wg", "set", "wg0", "fwmark", "0"])
    lab.set_allowed_ips(*CORP_PREFIXES)


def _ipv4_only_tunnel(lab: "Lab") -> None:
    style = _needs(lab, "ipv6-beside-ipv4-tunnel", "wg-quick", "def1", "default", "ipsec")
    if style == "ipsec":
        v6 = [p for p in IPSEC_FULL + ND_BYPASS + covering_policies(*CORP_PREFIXES) if _is_v6(p)]
        for policy in v6:
            lab.step(policy.delete(), tolerate=True)
        return
    drop_tunnel_routes(lab, families=(6,))
    # No IPv6 on wg0 at all: its addresses (link-local too) and their connected routes go.
    lab.sysctl("lap", "net.ipv6.conf.wg0.disable_ipv6", 1)
    lab.set_allowed_ips(*[p for p in lab.allowed_ips() if ":" not in p])


def _tunnel_down(lab: "Lab") -> None:
    style = _needs(lab, "tunnel-down", "wg-quick", "def1", "default", "ipsec")
    if style == "ipsec":
        lab.ip("xfrm policy flush")
        return
    lab.stop_laptop_tunnel()
    drop_tunnel_routes(lab)


def _ipsec_exception(prefix: str) -> Step:
    def bypass(lab: "Lab") -> None:
        if lab.scenario and lab.scenario.style == "ipsec":
            for policy in bypass_policies(prefix):
                lab.step(policy.add())
    bypass.__name__ = f"ipsec_bypass({prefix})"
    return bypass


# ---------------------------------------------------------------- VPN client behaviour on loss (reconnect)

def _client(mode: str, retry: float = 4.0) -> Step:
    """Start the laptop's client monitor (tests/lab/supervisor.py) in `mode`. Its retry
    period (4 s) outlasts the lab's 3 s cuts, so the reconnect time it causes is measurable."""
    def start(lab: "Lab") -> None:
        _needs(lab, f"{mode}-client", "wg-quick")
        lab.start_supervisor(mode, retry=retry)
    start.__name__ = f"client({mode})"
    return start


def _stop_client(lab: "Lab") -> None:
    lab.stop_supervisor()


KILL_SWITCH = f"""
table inet lab_killswitch {{
    chain output {{
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        oifname "wg0" accept
        ip daddr {VPN_SERVER} udp dport {VPN_PORT} accept
        icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept
    }}
}}
"""


def _kill_switch(lab: "Lab") -> None:
    _needs(lab, "kill-switch", "wg-quick", "def1", "default")
    lab.exec(["nft", "-f", "-"], input=KILL_SWITCH)


# ---------------------------------------------------------------- the knobs

STYLES: dict[str, Knob] = {
    "wg-quick": Knob(
        "wg-quick full tunnel: fwmark 51820, default via wg0 in table 51820, rules "
        "'not fwmark 51820 lookup 51820' and 'lookup main suppress_prefixlength 0' (both families); "
        "main keeps its defaults via eth0.",
        (laptop_tunnel,
         f"wg set wg0 fwmark {WG_QUICK_FWMARK}",
         f"ip -4 route add default dev wg0 table {WG_QUICK_TABLE}",
         f"ip -6 route add default dev wg0 table {WG_QUICK_TABLE}",
         f"ip -4 rule add not fwmark {WG_QUICK_FWMARK} table {WG_QUICK_TABLE}",
         "ip -4 rule add table main suppress_prefixlength 0",
         f"ip -6 rule add not fwmark {WG_QUICK_FWMARK} table {WG_QUICK_TABLE}",
         "ip -6 rule add table main suppress_prefixlength 0",
         sysctl("net.ipv4.conf.all.src_valid_mark", 1),
         resolv(CORP_RESOLVER))),
    "def1": Knob(
        "OpenVPN def1: 0.0.0.0/1 + 128.0.0.0/1 (and ::/1 + 8000::/1) via wg0, a host route to the "
        "server via the LAN router; main's defaults via eth0 stay.",
        (f"ip -4 route add {VPN_SERVER}/32 via {LAN_ROUTER} dev eth0",
         laptop_tunnel,
         "ip -4 route add 0.0.0.0/1 dev wg0",
         "ip -4 route add 128.0.0.0/1 dev wg0",
         "ip -6 route add ::/1 dev wg0",
         "ip -6 route add 8000::/1 dev wg0",
         resolv(CORP_RESOLVER))),
    "default": Knob(
        "Default route replaced: default dev wg0 (both families), host route to the server via the LAN router.",
        (f"ip -4 route add {VPN_SERVER}/32 via {LAN_ROUTER} dev eth0",
         laptop_tunnel,
         "ip -4 route replace default dev wg0",
         "ip -6 route replace default dev wg0",
         resolv(CORP_RESOLVER))),
    "ipsec": Knob(
        "Policy-based IPsec, no tunnel interface: out/in/fwd policies for 0.0.0.0/0 and ::/0 with an "
        "ESP tunnel template to the server, bypass for the server itself (and for IPv6 neighbour "
        "discovery). No ESP states (this kernel cannot hold them): covered traffic is held back.",
        tuple(p.add() for p in IPSEC_FULL + ND_BYPASS) + (resolv(CORP_RESOLVER),)),
    "none": Knob(
        "No VPN: a plain laptop on the LAN, default via eth0, the LAN router's resolver.",
        (resolv(LAN_ROUTER),)),
}

FAULTS: dict[str, Knob] = {
    "tunnelvision": Knob(
        "DHCP option 121 pushes 198.51.100.0/24 via the LAN router: more specific than the tunnel's routes.",
        (f"ip -4 route add 198.51.100.0/24 via {LAN_ROUTER} dev eth0 proto dhcp",)),
    "public-lan": Knob(
        "The hostile LAN hands out a public prefix: 192.0.2.10/24 on eth0 (router 192.0.2.1 on the isp).",
        ("ip -4 addr add 192.0.2.10/24 dev eth0",
         "isp: ip -4 addr add 192.0.2.1/24 dev lan0"),
        undo=("isp: ip -4 addr del 192.0.2.1/24 dev lan0",)),
    "managed-exception": Knob(
        "An intended exception: 198.51.100.128/25 via the LAN router (config allowed_direct lists it); "
        "with ipsec also a bypass policy for it.",
        (f"ip -4 route add 198.51.100.128/25 via {LAN_ROUTER} dev eth0 proto static",
         _ipsec_exception("198.51.100.128/25"))),
    "split": Knob(
        "Split tunnel: only the corporate prefixes 198.18.0.0/15, 100.100.0.0/24, fd00:100::/64 go into "
        "the tunnel; defaults stay via eth0, no wg-quick rules.",
        (_split,)),
    "dns-outside": Knob(
        "resolv.conf points at the LAN router's resolver (100.64.0.1), outside the tunnel.",
        (resolv(LAN_ROUTER),)),
    "ipv6-beside-ipv4-tunnel": Knob(
        "The tunnel carries IPv4 only: IPv6 disabled on wg0 (no address, route, rule or allowed-ip; "
        "with ipsec no IPv6 policy); eth0 keeps 2001:db8:1::2/64 and its IPv6 default via 2001:db8:1::1.",
        (_ipv4_only_tunnel,)),
    "tunnel-down": Knob(
        "The tunnel is gone: wg0 deleted (its wireguard-go killed) with its routes and rules, defaults "
        "via eth0 (ipsec: all policies flushed). resolv.conf still names the corporate resolver.",
        (_tunnel_down,)),
    "fail-open-client": Knob(
        "A VPN client that fails open: it pings the gateway through wg0 every 0.1 s; after 0.8 s without a "
        "reply it removes wg-quick's rules (traffic falls back to eth0 in clear), retries every 4 s and puts "
        "them back on the first reply (wg-quick style only).",
        (_client("fail-open"),), undo=(_stop_client,)),
    "give-up-client": Knob(
        "A VPN client that gives up: after 0.8 s without a reply from the gateway it deletes wg0 and "
        "wg-quick's rules and exits; the tunnel stays down, traffic goes out of eth0 (wg-quick style only).",
        (_client("give-up"),), undo=(_stop_client,)),
    "kill-switch": Knob(
        "A firewall kill switch (as Mullvad's or an always-on client's): the laptop's output drops "
        "everything but lo, wg0, WireGuard to the server and IPv6 neighbour discovery.",
        (_kill_switch,)),
    # -- per-app (perapp probe): uid 1234 runs `sleep`; the rules name it ------------------
    "uid-bypass": Knob(
        "A per-user bypass: 'uidrange 1234-1234 lookup main priority 100' (both families) ahead of "
        "wg-quick's rules, and a process (sleep) running as uid 1234. Leaks with wg-quick (main keeps its "
        "default via eth0).",
        ("ip -4 rule add uidrange 1234-1234 lookup main priority 100",
         "ip -6 rule add uidrange 1234-1234 lookup main priority 100",
         lambda lab: lab.start_lap_process("uid-1234", ["sleep", "600"], uid=1234))),
    "uid-in-tunnel": Knob(
        "The correct twin of uid-bypass: uid 1234's rules look up wg-quick's table 51820 (into wg0); "
        "sleep runs as uid 1234.",
        (f"ip -4 rule add uidrange 1234-1234 lookup {WG_QUICK_TABLE} priority 100",
         f"ip -6 rule add uidrange 1234-1234 lookup {WG_QUICK_TABLE} priority 100",
         lambda lab: lab.start_lap_process("uid-1234", ["sleep", "600"], uid=1234))),
    "uid-mark-bypass": Knob(
        "Firewall-marked user: nftables (type route hook output) marks uid 1234's packets 0x1234 and "
        "'fwmark 0x1234 lookup main priority 90' (both families) routes them around wg0; sleep runs as uid 1234.",
        ("nft add table inet lc_perapp",
         "nft add chain inet lc_perapp out '{ type route hook output priority mangle; }'",
         "nft add rule inet lc_perapp out meta skuid 1234 meta mark set 0x1234",
         "ip -4 rule add fwmark 0x1234 lookup main priority 90",
         "ip -6 rule add fwmark 0x1234 lookup main priority 90",
         lambda lab: lab.start_lap_process("uid-1234", ["sleep", "600"], uid=1234))),
    "bound-socket": Knob(
        "An app bound to the physical device: a python process whose UDP socket is bound to eth0 "
        "(SO_BINDTODEVICE) and connected to 198.51.100.1:9.",
        (lambda lab: lab.start_bound_socket("eth0"),)),
    "bound-socket-tunnel": Knob(
        "The correct twin of bound-socket: the python process's UDP socket is bound to wg0.",
        (lambda lab: lab.start_bound_socket("wg0"),)),
    # -- tethering (tethering probe): client namespace <tag>-tcl 192.168.42.2/24 behind usb0 ------
    "tether-leak": Knob(
        "USB tethering out of the LAN: a client namespace (192.168.42.2/24) behind the laptop's usb0 "
        "(192.168.42.1/24), IPv4 forwarding on, 'iif usb0 lookup 42 priority 100' with table 42's default "
        "via the LAN router (as Android tethering routes), masquerade out of eth0.",
        (lambda lab: lab.add_tethered_client(),
         f"ip -4 route add default via {LAN_ROUTER} dev eth0 table 42",
         "ip -4 rule add iif usb0 lookup 42 priority 100",
         sysctl("net.ipv4.ip_forward", 1),
         "nft add table ip lc_tether",
         "nft add chain ip lc_tether post '{ type nat hook postrouting priority srcnat; }'",
         "nft add rule ip lc_tether post ip saddr 192.168.42.0/24 oifname eth0 masquerade"),
        undo=(lambda lab: lab.remove_tethered_client(),)),
    "tether-tunnel": Knob(
        "The correct twin of tether-leak: the same client behind usb0, forwarding on, forwarded along the "
        "style's default path into wg0 and masqueraded out of wg0.",
        (lambda lab: lab.add_tethered_client(),
         sysctl("net.ipv4.ip_forward", 1),
         "nft add table ip lc_tether",
         "nft add chain ip lc_tether post '{ type nat hook postrouting priority srcnat; }'",
         "nft add rule ip lc_tether post ip saddr 192.168.42.0/24 oifname wg0 masquerade"),
        undo=(lambda lab: lab.remove_tethered_client(),)),
    "tether-no-forwarding": Knob(
        "tether-leak's client, table 42, rule and masquerade, but IPv4 forwarding off: nothing is forwarded.",
        (lambda lab: lab.add_tethered_client(),
         f"ip -4 route add default via {LAN_ROUTER} dev eth0 table 42",
         "ip -4 rule add iif usb0 lookup 42 priority 100",
         sysctl("net.ipv4.ip_forward", 0),
         "nft add table ip lc_tether",
         "nft add chain ip lc_tether post '{ type nat hook postrouting priority srcnat; }'",
         "nft add rule ip lc_tether post ip saddr 192.168.42.0/24 oifname eth0 masquerade"),
        undo=(lambda lab: lab.remove_tethered_client(),)),
    "forward-kill-switch": Knob(
        "A kill switch on forwarded traffic: nftables forward chain (policy drop) accepts only traffic "
        "out of wg0 and replies (ct state established,related).",
        ("nft add table inet lc_fwd",
         "nft add chain inet lc_fwd forward '{ type filter hook forward priority filter; policy drop; }'",
         "nft add rule inet lc_fwd forward ct state established,related accept",
         "nft add rule inet lc_fwd forward oifname wg0 accept")),
}


def describe() -> str:
    """One line per style and fault, for docs and error messages."""
    lines = [f"style {name}: {knob.doc}" for name, knob in STYLES.items()]
    lines += [f"fault {name}: {knob.doc}" for name, knob in FAULTS.items()]
    return "\n".join(lines)


__all__ = ["Knob", "Scenario", "ScenarioError", "STYLES", "FAULTS", "Policy", "covering_policies",
           "bypass_policies", "drop_tunnel_routes", "resolv", "sysctl", "laptop_tunnel", "describe",
           "WG_QUICK_TABLE", "WG_QUICK_FWMARK", "VPN_PORT"]
