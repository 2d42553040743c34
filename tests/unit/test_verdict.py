"""The egress verdict: route, xfrm and firewall combined, and which one decided.

Kernel answers are recorded per (destination, mark); the firewall is real
`nft -j list ruleset` output (nftables 1.0.6), recorded in a scratch network
namespace on the development machine after loading:

- data/nft-killswitch-verdict.json: `table inet killswitch` (output: policy
  drop; lo, wg0, UDP 51820 to 203.0.113.1, the LAN 100.64.0.0/24,
  link-local and neighbour discovery accepted; forward: policy drop,
  established and wg0 accepted) and `table inet splitapp` (route chain:
  `meta skuid 1234 meta mark set 0x1234`);
- data/nft-killswitch-tcp443.json: the same plus `tcp dport 443 accept` at
  the end of the output chain (a kill switch that lets the web out).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path as FsPath

from leakcheck import config
from leakcheck.active import Observation
from leakcheck.active import Probe as ActivePacket
from leakcheck.linux.firewall import parse_nft_json
from leakcheck.netstate import (Address, Firewall, Link, NetState, Nexthop, Route, Rule, WireGuardInfo,
                                XfrmPolicy, XfrmTemplate)
from leakcheck.oracle import Layer, Oracle, Path, confirm
from leakcheck.rtnl import Answer
from leakcheck.tunnel import detect

DATA = FsPath(__file__).parent / "data"
net = ipaddress.ip_network
addr = ipaddress.ip_address

LINKS = (Link(1, "lo", None, True, "UNKNOWN"), Link(2, "eth0", "veth", True, "UP"),
         Link(3, "wg0", "tun", True, "UNKNOWN"), Link(4, "usb0", "veth", True, "UP"))
ADDRS = (Address(2, "eth0", addr("100.64.0.2"), 24, 0), Address(3, "wg0", addr("100.100.0.2"), 24, 0),
         Address(4, "usb0", addr("192.168.42.1"), 24, 0))
ROUTES = (Route(net("0.0.0.0/0"), 254, "unicast", "dhcp", 0, (Nexthop(2, "eth0", "100.64.0.1"),)),
          Route(net("0.0.0.0/0"), 51820, "unicast", "boot", 0, (Nexthop(3, "wg0", None),)),
          Route(net("198.51.100.0/24"), 254, "unicast", "dhcp", 0, (Nexthop(2, "eth0", "100.64.0.1"),)))
RULES = (Rule(4, 90, "lookup", 254, fwmark=0x1234, fwmask=0xFFFFFFFF),
         Rule(4, 32764, "lookup", 254, suppress_prefixlen=0),
         Rule(4, 32765, "lookup", 51820, invert=True, fwmark=51820, fwmask=0xFFFFFFFF))

TUNNEL = Answer(prefix="0.0.0.0/0", table=51820, type=1, protocol=3, oif=3)
ETH_DEFAULT = Answer(prefix="0.0.0.0/0", table=254, type=1, protocol=16, oif=2, gateway="100.64.0.1")
TUNNELVISION = Answer(prefix="198.51.100.0/24", table=254, type=1, protocol=16, oif=2, gateway="100.64.0.1")


class RecordedLookup:
    """The kernel's answers by (destination, mark); keeps the queries it was asked."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def lookup_many(self, queries):
        self.asked += list(queries)
        return [self.answers.get((str(q.dst), q.mark or 0)) or self.answers[(str(q.dst), None)] for q in queries]

    def close(self):
        pass


def firewall(name: str | None) -> Firewall | None:
    if name is None:
        return None
    chains, rules = parse_nft_json((DATA / name).read_text())
    return Firewall(chains=tuple(chains), rules=tuple(rules), sources=("nftables",))


def oracle(answers, fw: str | None = "nft-killswitch-verdict.json", **extra) -> tuple[Oracle, RecordedLookup]:
    fields = dict(links=LINKS, addresses=ADDRS, routes=ROUTES, rules=RULES, firewall=firewall(fw),
                  wireguard=(WireGuardInfo("wg0", 51820, ("203.0.113.1",), ("0.0.0.0/0",), None),),
                  accounts={1234: ("alice", 1234)})
    fields.update(extra)
    state = NetState(**fields)
    lookup = RecordedLookup(answers)
    return Oracle(state, detect(state, config.defaults()), lookup), lookup


# -- which layer decides ----------------------------------------------------------------

def test_route_decides_when_the_packet_goes_into_the_tunnel():
    o, _ = oracle({("1.1.1.1", None): TUNNEL})
    egress = o.egress("1.1.1.1")
    assert egress.path is Path.TUNNEL and egress.decided_by is Layer.ROUTE
    assert egress.firewall is None  # the firewall is only asked about packets leaving in clear
    assert egress.evidence()["decided_by"] == "route"


def test_route_decides_a_clear_path_without_a_firewall():
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION}, fw=None)
    egress = o.egress("198.51.100.7")
    assert egress.path is Path.CLEAR and egress.decided_by is Layer.ROUTE
    assert egress.firewall is None and not egress.surely_open


def test_kill_switch_blocks_ordinary_traffic_behind_a_tunnelvision_route():
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION})
    egress = o.egress("198.51.100.7")
    assert egress.path is Path.BLOCKED and egress.decided_by is Layer.FIREWALL
    assert not egress.outside_tunnel
    evidence = egress.evidence()
    assert evidence["decided_by"] == "firewall" and evidence["interface"] == "eth0"
    assert evidence["route"].startswith("198.51.100.0/24 via 100.64.0.1 dev eth0")
    classes = evidence["firewall"]["classes"]
    assert set(classes) == {"TCP/443", "TCP/80", "UDP/443", "UDP/53"}
    assert all(c["result"] == "drop" and c["rule"] == "policy drop" for c in classes.values())
    assert evidence["firewall"]["chain"] == "nftables inet killswitch output"
    assert "dropped by the firewall's output chain" in egress.describe()


def test_kill_switch_lets_only_the_tunnels_own_udp_to_the_server_out():
    o, _ = oracle({("203.0.113.1", None): ETH_DEFAULT})
    wireguard = o.egress("203.0.113.1", ipproto=17, dport=51820)
    assert wireguard.path is Path.CLEAR and wireguard.firewall.result == "accept"
    assert wireguard.evidence()["firewall"]["rule"] == "ip daddr 203.0.113.1 udp dport 51820 accept"
    web = o.egress("203.0.113.1", ipproto=6, dport=443)
    assert web.path is Path.BLOCKED and web.decided_by is Layer.FIREWALL
    dns = o.egress("203.0.113.1", ipproto=17, dport=53)
    assert dns.path is Path.BLOCKED and dns.decided_by is Layer.FIREWALL


def test_the_lan_stays_reachable_through_the_kill_switch():
    o, _ = oracle({("100.64.0.1", None): Answer(prefix="100.64.0.0/24", table=254, type=1, protocol=2, oif=2)})
    egress = o.egress("100.64.0.1", ipproto=17, dport=53)
    assert egress.path is Path.CLEAR and egress.firewall.result == "accept"


def test_a_kill_switch_that_lets_the_web_out_leaves_the_path_open():
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION}, fw="nft-killswitch-tcp443.json")
    egress = o.egress("198.51.100.7")
    assert egress.path is Path.CLEAR and egress.surely_open
    assert [c.describe() for c in egress.firewall.open_classes] == ["TCP/443"]
    assert egress.firewall.evidence()["result"] == "accept"
    # a refused UDP test packet does not clear a path the web surely takes
    refused = Observation(ActivePacket("udp", "198.51.100.7", 33434), send_error="PermissionError: "
                                                                                 "Operation not permitted")
    assert confirm(egress, refused) == (True, "inferred")
    seen = Observation(ActivePacket("udp", "198.51.100.7", 33434), clear_on=["eth0"])
    assert confirm(egress, seen) == (True, "observed")


def test_a_refused_test_packet_still_clears_an_uncertain_path():
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION}, fw=None)
    egress = o.egress("198.51.100.7")
    refused = Observation(ActivePacket("udp", "198.51.100.7", 33434), send_error="PermissionError: "
                                                                                 "Operation not permitted")
    assert confirm(egress, refused) == (False, "observed")


def test_xfrm_decides_before_the_firewall():
    template = XfrmTemplate(src="100.64.0.2", dst="203.0.113.1", proto="esp", mode="tunnel")
    protect = XfrmPolicy("out", net("0.0.0.0/0"), net("198.51.100.0/24"), 100, "allow", (template,))
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION}, xfrm_policies=(protect,))
    egress = o.egress("198.51.100.7")
    assert egress.path is Path.PROTECTED and egress.decided_by is Layer.XFRM and egress.firewall is None
    block = XfrmPolicy("out", net("0.0.0.0/0"), net("198.51.100.0/24"), 100, "block")
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION}, xfrm_policies=(block,))
    egress = o.egress("198.51.100.7")
    assert egress.path is Path.BLOCKED and egress.decided_by is Layer.XFRM


def test_firewall_mark_is_applied_before_routing():
    # uid 1234's packets get mark 0x1234 in the route chain; 'fwmark 0x1234 lookup main' then
    # sends them out of eth0, where the kill switch drops them
    answers = {("1.1.1.1", None): TUNNEL, ("1.1.1.1", 0x1234): ETH_DEFAULT}
    o, lookup = oracle(answers)
    egress = o.egress("1.1.1.1", uid=1234)
    assert lookup.asked[-1].mark == 0x1234
    assert egress.evidence()["marked_by"] == ["meta skuid 1234 meta mark set 0x00001234"]
    assert egress.path is Path.BLOCKED and egress.decided_by is Layer.FIREWALL
    assert o.firewall_mark("1.1.1.1", 1234)[0] == 0x1234
    assert o.firewall_mark("1.1.1.1", 1000)[0] == 0
    ordinary = o.egress("1.1.1.1", uid=1000)
    assert lookup.asked[-1].mark is None and ordinary.path is Path.TUNNEL


def test_forwarded_packets_meet_the_forward_chain():
    o, _ = oracle({("1.1.1.1", None): ETH_DEFAULT})
    egress = o.egress("1.1.1.1", iif="usb0", src="192.168.42.2")
    assert egress.path is Path.BLOCKED and egress.decided_by is Layer.FIREWALL
    assert egress.firewall.hook == "forward"


def test_without_a_readable_firewall_no_firewall_claim_is_made():
    unreadable = Firewall(unreadable=("nftables: needs root",))
    o, _ = oracle({("198.51.100.7", None): TUNNELVISION}, fw=None, firewall=unreadable)
    egress = o.egress("198.51.100.7")
    assert egress.path is Path.CLEAR and egress.firewall is None


def test_users_come_from_the_state():
    o, _ = oracle({})
    assert o.user_name(1234) == "alice" and o.primary_gid(1234) == 1234
    assert o.user_name(4321) is None and o.primary_gid(None) is None


def test_firewall_prefixes_are_map_boundaries():
    o, _ = oracle({})
    assert net("100.64.0.0/24") in o.firewall_prefixes(4)
    assert net("fe80::/10") in o.firewall_prefixes(6)


def test_probes_ask_the_context_not_the_platform():
    # reconnect belongs to another change (its cut moves behind an injected service)
    probes_dir = FsPath(__file__).resolve().parents[2] / "probes"
    for name in ("routes", "split", "ipv6", "dns", "perapp", "tethering"):
        text = (probes_dir / f"{name}.py").read_text()
        assert "leakcheck.linux" not in text, name
        assert "import pwd" not in text, name
