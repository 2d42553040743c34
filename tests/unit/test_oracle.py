"""Egress classification and tunnel detection on constructed network state,
with recorded kernel answers standing in for the netlink socket."""

import ipaddress

from leakcheck import config
from leakcheck.netstate import (Address, Link, NetState, Nexthop, Route, Rule, WireGuardInfo, XfrmPolicy,
                                XfrmTemplate)
from leakcheck.oracle import Oracle, Path
from leakcheck.rtnl import Answer
from leakcheck.tunnel import Tunnel, carries_default, detect, family_gap, vpn_endpoints

net = ipaddress.ip_network
addr = ipaddress.ip_address


class RecordedLookup:
    """Answers by destination, as the kernel answered in a recorded session."""

    def __init__(self, answers):
        self.answers = answers

    def lookup_many(self, queries):
        return [self.answers[str(q.dst)] for q in queries]

    def close(self):
        pass


LINKS = (Link(1, "lo", None, True, "UNKNOWN"), Link(2, "eth0", "veth", True, "UP"),
         Link(3, "wg0", "tun", True, "UNKNOWN"))
ADDRS = (Address(2, "eth0", addr("100.64.0.2"), 24, 0), Address(3, "wg0", addr("100.100.0.2"), 24, 0))
DEFAULT_ETH = Route(net("0.0.0.0/0"), 254, "unicast", "dhcp", 0, (Nexthop(2, "eth0", "100.64.0.1"),))
DEFAULT_WG = Route(net("0.0.0.0/0"), 51820, "unicast", "boot", 0, (Nexthop(3, "wg0", None),))
WG_RULES = (Rule(4, 32764, "lookup", 254, suppress_prefixlen=0),
            Rule(4, 32765, "lookup", 51820, invert=True, fwmark=51820, fwmask=0xFFFFFFFF),
            Rule(4, 32766, "lookup", 254))


def state(**extra):
    base = dict(links=LINKS, addresses=ADDRS, routes=(DEFAULT_ETH, DEFAULT_WG), rules=WG_RULES,
                wireguard=(WireGuardInfo("wg0", 51820, ("203.0.113.1",), ("0.0.0.0/0",), None),))
    base.update(extra)
    return NetState(**base)


def oracle(st, answers):
    tunnel = detect(st, config.defaults())
    return Oracle(st, tunnel, RecordedLookup(answers))


def test_wireguard_go_tun_is_detected_as_wireguard():
    tunnel = detect(state(), config.defaults())
    assert (tunnel.state, tunnel.kind, tunnel.interfaces) == ("up", "wireguard", ("wg0",))
    assert vpn_endpoints(state()) == {"203.0.113.1"}


def test_config_names_the_tunnel():
    cfg = config.from_mapping({"tunnel": {"interfaces": ["eth*"]}})
    assert detect(state(), cfg).interfaces == ("eth0",)


def test_down_and_absent_tunnels():
    down = state(links=(LINKS[0], LINKS[1], Link(3, "wg0", "tun", False, "DOWN")))
    assert detect(down, config.defaults()).state == "down"
    none = state(links=LINKS[:2], wireguard=())
    assert detect(none, config.defaults()) == Tunnel("absent", "none", ())


def test_policy_ipsec_without_interface():
    policy = XfrmPolicy("out", net("0.0.0.0/0"), net("0.0.0.0/0"), 100, "allow",
                        (XfrmTemplate("100.64.0.2", "203.0.113.1", "esp", "tunnel"),))
    st = state(links=LINKS[:2], wireguard=(), routes=(DEFAULT_ETH,), xfrm_policies=(policy,))
    tunnel = detect(st, config.defaults())
    assert (tunnel.state, tunnel.kind, tunnel.policy_ipsec) == ("up", "ipsec", True)
    assert carries_default(st, tunnel, 4) and vpn_endpoints(st) == {"203.0.113.1"}


def test_tunnel_clear_and_deciding_rule_evidence():
    o = oracle(state(), {
        "198.51.100.1": Answer(prefix="0.0.0.0/0", table=51820, type=1, protocol=3, oif=3),
        "203.0.113.1": Answer(prefix="0.0.0.0/0", table=254, type=1, protocol=16, oif=2, gateway="100.64.0.1"),
    })
    inside = o.egress("198.51.100.1")
    assert inside.path is Path.TUNNEL and inside.interface == "wg0"
    assert inside.rule.describe() == "32765: not from all fwmark 0xca6c lookup 51820"
    outside = o.egress("203.0.113.1", mark=51820)
    assert outside.path is Path.CLEAR and outside.gateway == "100.64.0.1"
    # suppress_prefixlength 0 rejects the default route: the main rule at 32766 decided
    assert outside.rule.priority == 32766
    assert outside.evidence()["route"] == "default via 100.64.0.1 dev eth0 proto dhcp"
    assert outside.evidence()["as"] == {"mark": "0xca6c"}


def test_xfrm_protects_blocks_and_bypasses():
    protect = XfrmPolicy("out", net("0.0.0.0/0"), net("0.0.0.0/0"), 100, "allow",
                         (XfrmTemplate("100.64.0.2", "203.0.113.1", "esp", "tunnel"),))
    block = XfrmPolicy("out", net("0.0.0.0/0"), net("192.0.2.0/24"), 5, "block")
    bypass = XfrmPolicy("out", net("0.0.0.0/0"), net("203.0.113.1/32"), 10, "allow")
    st = state(links=LINKS[:2], wireguard=(), routes=(DEFAULT_ETH,), rules=(),
               xfrm_policies=(protect, block, bypass))
    eth = Answer(prefix="0.0.0.0/0", table=254, type=1, protocol=16, oif=2, gateway="100.64.0.1")
    o = oracle(st, {"198.51.100.1": eth, "192.0.2.9": eth, "203.0.113.1": eth})
    assert o.egress("198.51.100.1").path is Path.PROTECTED
    assert o.egress("192.0.2.9").path is Path.BLOCKED
    assert o.egress("203.0.113.1").path is Path.CLEAR


def test_no_route_and_blackhole_are_blocked():
    o = oracle(state(), {"2001:db8::1": Answer(error=101),
                         "198.51.100.1": Answer(prefix="198.51.100.0/24", table=254, type=6, protocol=4)})
    assert o.egress("2001:db8::1").path is Path.BLOCKED
    assert "ENETUNREACH" in o.egress("2001:db8::1").error
    assert o.egress("198.51.100.1").path is Path.BLOCKED


def test_family_gap_only_beside_a_full_tunnel():
    st = state()
    tunnel = detect(st, config.defaults())
    assert family_gap(st, tunnel, 6) and not family_gap(st, tunnel, 4)
    corp_only = Route(net("198.18.0.0/15"), 254, "unicast", "boot", 0, (Nexthop(3, "wg0", None),))
    split = state(routes=(DEFAULT_ETH, corp_only), rules=())
    assert not family_gap(split, detect(split, config.defaults()), 6)
