"""The perapp probe on constructed network state: a small simulated kernel
(policy rules with uid / mark / iif / src selectors, tables, suppress_prefixlength,
bound-device lookups) answers the route lookups."""

from __future__ import annotations

import ipaddress

from leakcheck import config
from leakcheck.active import Observation
from leakcheck.linux.firewall import parse_nft_json
from leakcheck.netstate import (Activity, Address, Firewall, Link, NetState, Nexthop, ProcessInfo, Route, Rule,
                                SocketInfo, WireGuardInfo)
from leakcheck.oracle import Oracle
from leakcheck.probe import ProbeContext
from leakcheck.report import Effect
from leakcheck.rtnl import Answer
from leakcheck.tunnel import detect
from leakcheck.probes.perapp import PerAppProbe

net = ipaddress.ip_network
addr = ipaddress.ip_address
EHOSTUNREACH = 113
ENETUNREACH = 101


class FakeKernel:
    """Answers RTM_GETROUTE queries the way the kernel's FIB would for a NetState:
    rules in priority order, longest prefix per table, suppress_prefixlength,
    a bound device (oif) restricting next hops, forwarding off for iif lookups."""

    def __init__(self, state: NetState):
        self.state = state
        self.asked = []

    def lookup_many(self, queries):
        self.asked += list(queries)
        return [self.answer(q) for q in queries]

    def close(self):
        pass

    def answer(self, q) -> Answer:
        family = q.dst.version
        iif = self.state.ifname(q.iif) if q.iif is not None else None
        if iif is not None and family == 4 and (self.state.sysctls.get("net.ipv4.ip_forward") == "0" or
                                                self.state.sysctls.get(f"net.ipv4.conf.{iif}.forwarding") == "0"):
            return Answer(error=EHOSTUNREACH)
        for rule in self.state.rules_for(family):
            if not rule.matches(dst=q.dst, src=q.src, iif=iif, mark=q.mark or 0, uid=q.uid or 0):
                continue
            if rule.action != "lookup":
                return Answer(error=ENETUNREACH)
            route = self._best(rule.table, q)
            if route is None or (rule.suppress_prefixlen is not None
                                 and route.dst.prefixlen <= rule.suppress_prefixlen):
                continue
            hop = route.nexthops[0] if route.nexthops else Nexthop(None, None, None)
            rtype = {"unicast": 1, "local": 2, "blackhole": 6, "unreachable": 7, "prohibit": 8}[route.type]
            return Answer(prefix=str(route.dst), table=route.table, type=rtype, protocol=4, scope=0,
                          oif=hop.ifindex, gateway=hop.gateway)
        return Answer(error=ENETUNREACH)

    def _best(self, table, q):
        hits = [r for r in self.state.routes if r.table == table and r.family == q.dst.version and q.dst in r.dst
                and (q.oif is None or any(h.ifindex == q.oif for h in r.nexthops))]
        return max(hits, key=lambda r: r.dst.prefixlen, default=None)


LINKS = (Link(1, "lo", None, True, "UNKNOWN"), Link(2, "eth0", "veth", True, "UP"),
         Link(3, "wg0", "tun", True, "UNKNOWN"))
ADDRS = (Address(2, "eth0", addr("100.64.0.2"), 24, 0), Address(3, "wg0", addr("100.100.0.2"), 24, 0))
ETH, WG = Nexthop(2, "eth0", "100.64.0.1"), Nexthop(3, "wg0", None)
MAIN_DEFAULT = Route(net("0.0.0.0/0"), 254, "unicast", "boot", 0, (ETH,))
LAN = Route(net("100.64.0.0/24"), 254, "unicast", "kernel", 253, (Nexthop(2, "eth0", None),))
WG_DEFAULT = Route(net("0.0.0.0/0"), 51820, "unicast", "boot", 0, (WG,))
WG_RULES = (Rule(4, 32764, "lookup", 254, suppress_prefixlen=0),
            Rule(4, 32765, "lookup", 51820, invert=True, fwmark=51820, fwmask=0xFFFFFFFF),
            Rule(4, 32766, "lookup", 254))
WG_INFO = WireGuardInfo("wg0", 51820, ("203.0.113.1",), ("0.0.0.0/0",), 1)
WG_GO = ProcessInfo(pid=100, name="wireguard-go", uid=0, user="root", exe="/usr/bin/wireguard-go",
                    tunnel_client=True)
WG_SOCKET = SocketInfo("udp", 4, "unconnected", "0.0.0.0", 40000, None, None, 0, 11, mark=51820, pids=(100,))
SLEEPER = ProcessInfo(pid=200, name="sleep", uid=1234, exe="/usr/bin/sleep")
CANARIES = {"canaries": {"ipv4": ["198.51.100.1"], "ipv6": []}}


def state(rules=(), routes=(), sockets=(), processes=(), firewall=None, **extra) -> NetState:
    activity = extra.pop("activity", None) or Activity(processes=(WG_GO, *processes), sockets=(WG_SOCKET, *sockets),
                                                       socket_source="sock_diag", complete=True)
    return NetState(links=LINKS, addresses=ADDRS, routes=(MAIN_DEFAULT, LAN, WG_DEFAULT, *routes),
                    rules=tuple(sorted(WG_RULES + tuple(rules), key=lambda r: r.priority)),
                    wireguard=(WG_INFO,), firewall=firewall or Firewall(sources=("nftables",)),
                    activity=activity, **extra)


def context(st: NetState, cfg=None, observe=None, is_root=True) -> ProbeContext:
    tunnel = detect(st, config.defaults())
    ctx = ProbeContext(config=config.from_mapping(cfg or CANARIES), state=st, tunnel=tunnel,
                       oracle=Oracle(st, tunnel, FakeKernel(st)), is_root=is_root, active=False)
    if observe is not None:
        ctx.observe = observe  # stands in for send + capture
    return ctx


def run(st, **kw):
    findings = PerAppProbe().run(context(st, **kw))
    return findings, {f.id: f for f in findings}


def nft(rules: str, chain="out", hook="output", ctype="route", family="inet") -> Firewall:
    """A firewall from nft JSON rule bodies (what `nft -j list ruleset` prints)."""
    import json
    items = [{"chain": {"family": family, "table": "t", "name": chain, "type": ctype, "hook": hook, "prio": -150,
                        "policy": "accept"}}]
    items += [{"rule": {"family": family, "table": "t", "chain": chain, "expr": expr}} for expr in json.loads(rules)]
    chains, parsed = parse_nft_json(json.dumps({"nftables": items}))
    return Firewall(chains=tuple(chains), rules=tuple(parsed), sources=("nftables",))


SKUID_MARK = """[[{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 1234}},
                  {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 4660}}]]"""


# -- users ------------------------------------------------------------------------------

def test_correct_wg_quick_passes_and_the_vpns_own_mark_is_expected():
    findings, _ = run(state(processes=(SLEEPER,)))
    assert findings == []


def test_uid_rule_ahead_of_wg_quick_names_the_user_and_process():
    st = state(rules=(Rule(4, 100, "lookup", 254, uid_range=(1234, 1234)),), processes=(SLEEPER,))
    findings, by_id = run(st)
    found = by_id["perapp.user-bypasses-tunnel"]
    assert found.effect is Effect.LEAK and len(findings) == 1
    ev = found.evidence
    assert [u["uid"] for u in ev["users"]] == [1234]
    assert ev["processes"][0]["pid"] == 200 and ev["processes"][0]["name"] == "sleep"
    assert ev["rule"] == "100: from all uidrange 1234-1234 lookup main"
    assert ev["interface"] == "eth0" and ev["method"] == "inferred"
    assert "uid 1234" in found.summary and "sleep (pid 200)" in found.summary


def test_uid_named_by_a_rule_is_checked_even_without_processes():
    st = state(rules=(Rule(4, 100, "lookup", 254, uid_range=(5000, 5999)),))
    _, by_id = run(st)
    users = by_id["perapp.user-bypasses-tunnel"].evidence["users"]
    assert {u["uid"] for u in users} == {5000, 5999}
    assert "No process of theirs runs now" in by_id["perapp.user-bypasses-tunnel"].summary


def test_uid_rule_into_the_tunnel_passes():
    st = state(rules=(Rule(4, 100, "lookup", 51820, uid_range=(1234, 1234)),), processes=(SLEEPER,))
    assert run(st)[0] == []


def test_firewall_marking_a_user_is_a_user_bypass_with_the_firewall_rule():
    st = state(rules=(Rule(4, 90, "lookup", 254, fwmark=0x1234, fwmask=0xFFFFFFFF),), processes=(SLEEPER,),
               firewall=nft(SKUID_MARK))
    findings, by_id = run(st)
    found = by_id["perapp.user-bypasses-tunnel"]
    assert found.evidence["firewall_rules"] == ["meta skuid 1234 meta mark set 0x00001234"]
    assert found.evidence["mark"] == "0x1234" and found.evidence["as"] == {"uid": 1234, "mark": "0x1234"}
    # the mark itself is not reported again: its only setter selects by user
    assert "perapp.mark-bypasses-tunnel" not in by_id


def test_mark_set_by_destination_is_a_mark_bypass():
    rules = """[[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                            "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}},
                 {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 48}}]]"""
    st = state(rules=(Rule(4, 90, "lookup", 254, fwmark=48, fwmask=0xFFFFFFFF),), firewall=nft(rules))
    _, by_id = run(st)
    found = by_id["perapp.mark-bypasses-tunnel"]
    assert found.effect is Effect.LEAK
    assert found.evidence["firewall_rules"] == ["ip daddr 192.0.2.0/24 meta mark set 0x00000030"]
    assert "192.0.2.0" in found.evidence["destinations"] or "192.0.2.1" in found.evidence["destinations"]


def test_mark_only_a_rule_names_is_a_warning():
    st = state(rules=(Rule(4, 90, "lookup", 254, fwmark=0x99, fwmask=0xFFFFFFFF),))
    _, by_id = run(st)
    found = by_id["perapp.mark-bypasses-tunnel"]
    assert found.effect is Effect.WARN and found.evidence["mark"] == "0x99"


def test_wg_quick_mark_is_the_vpns_own_even_without_the_wireguard_facts():
    # not root: no UAPI (no fwmark known), no socket marks; the rule pattern says it
    activity = Activity(processes=(SLEEPER,), limits=("socket marks need CAP_NET_ADMIN",))
    st = state(activity=activity)
    st = NetState(**{**st.__dict__, "wireguard": ()})
    findings, by_id = run(st, is_root=False)
    assert set(by_id) == {"perapp.partial-check"}
    assert by_id["perapp.partial-check"].effect is Effect.INFO


def test_cgroup_marked_by_the_firewall_names_the_cgroup_and_its_processes():
    rules = """[[{"match": {"op": "==", "left": {"socket": {"key": "cgroupv2", "level": 2}},
                            "right": "user.slice/app-torrent.scope"}},
                 {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1836018789}}]]"""
    app = ProcessInfo(pid=300, name="transmission", uid=1000, cgroup="/user.slice/app-torrent.scope")
    st = state(rules=(Rule(4, 90, "lookup", 254, fwmark=1836018789, fwmask=0xFFFFFFFF),), processes=(app,),
               firewall=nft(rules))
    _, by_id = run(st)
    found = by_id["perapp.cgroup-bypasses-tunnel"]
    assert found.evidence["cgroups"] == ["cgroupv2:user.slice/app-torrent.scope"]
    assert found.evidence["processes"][0]["name"] == "transmission"
    assert found.evidence["mark"] == "0x6d6f6c65"
    assert "perapp.user-bypasses-tunnel" not in by_id  # uid 1000 as such is not marked


def test_observed_packet_as_a_user_makes_it_observed():
    st = state(rules=(Rule(4, 100, "lookup", 254, uid_range=(1234, 1234)),), processes=(SLEEPER,))

    def observe(packets):
        return [Observation(p, clear_on=["eth0"]) if p.uid == 1234 else Observation(p, tunnel_on=["wg0"])
                for p in packets]
    _, by_id = run(st, observe=observe)
    found = by_id["perapp.user-bypasses-tunnel"]
    assert found.evidence["method"] == "observed"
    assert found.evidence["users"][0]["observed"]["seen_in_clear_on"] == ["eth0"]


def test_observed_only_bypass_is_reported_even_when_rules_do_not_explain_it():
    st = state(processes=(SLEEPER,))

    def observe(packets):
        return [Observation(p, clear_on=["eth0"]) if p.uid == 1234 else Observation(p, tunnel_on=["wg0"])
                for p in packets]
    _, by_id = run(st, observe=observe)
    found = by_id["perapp.user-bypasses-tunnel"]
    assert found.evidence["method"] == "observed" and "no rule leakcheck reads explains it" in found.summary


def test_kill_switch_refusing_the_users_packet_is_not_a_leak():
    st = state(rules=(Rule(4, 100, "lookup", 254, uid_range=(1234, 1234)),), processes=(SLEEPER,))

    def observe(packets):
        return [Observation(p, send_error="PermissionError: Operation not permitted") for p in packets]
    assert run(st, observe=observe)[0] == []


def test_no_tunnel_is_a_note_not_a_skip():
    st = NetState(links=LINKS[:2], addresses=ADDRS[:1], routes=(MAIN_DEFAULT,), rules=WG_RULES[2:])
    (note,) = PerAppProbe().run(context(st))
    assert note.id == "perapp.no-tunnel" and note.effect is Effect.INFO


# -- sockets ----------------------------------------------------------------------------

PY = ProcessInfo(pid=400, name="python3", uid=0, user="root", exe="/usr/bin/python3.11")


def bound(device="eth0", remote="198.51.100.1", port=9, local_port=41000, pids=(400,), uid=0):
    return SocketInfo("udp", 4, "connected" if remote else "unconnected", "100.64.0.2" if remote else "0.0.0.0",
                      local_port, remote, port if remote else None, uid, 21, bound_device=device, mark=0, pids=pids)


def test_socket_bound_to_eth0_names_the_process_and_connection():
    _, by_id = run(state(sockets=(bound(),), processes=(PY,)))
    found = by_id["perapp.socket-bound-to-physical-interface"]
    assert found.effect is Effect.LEAK
    ev = found.evidence
    assert ev["processes"] == [PY.evidence()] and ev["bound_device"] == "eth0"
    assert ev["remote"] == "198.51.100.1:9" and ev["interface"] == "eth0" and ev["path"] == "clear"
    assert "python3 (pid 400" in found.summary


def test_sockets_that_are_expected_pass():
    socks = (bound(device="wg0"),  # bound to the tunnel
             bound(remote="203.0.113.1", port=51820),  # to the VPN server
             bound(remote="100.64.0.1", port=53),  # the LAN (not public)
             bound(remote=None, local_port=5353),  # mDNS
             bound(pids=(100,)))  # the VPN client's own
    assert run(state(sockets=socks, processes=(PY,)))[0] == []


def test_unconnected_socket_bound_to_the_uplink_is_a_warning():
    _, by_id = run(state(sockets=(bound(remote=None, local_port=40001),), processes=(PY,)))
    assert by_id["perapp.socket-bound-to-physical-interface"].effect is Effect.WARN


def test_managed_exception_is_not_a_socket_finding():
    cfg = {**CANARIES, "policy": {"allowed_direct": ["198.51.100.0/24"]}}
    cfg["canaries"] = {"ipv4": ["192.0.2.1"], "ipv6": []}
    assert run(state(sockets=(bound(),), processes=(PY,)), cfg=cfg)[0] == []


def test_connection_routed_out_by_its_source_address_is_caught():
    sock = SocketInfo("tcp", 4, "established", "100.64.0.2", 50000, "198.51.100.7", 443, 0, 31, mark=0, pids=(400,))
    st = state(rules=(Rule(4, 200, "lookup", 254, src=net("100.64.0.2/32")),), sockets=(sock,), processes=(PY,))
    _, by_id = run(st)
    found = by_id["perapp.connection-outside-tunnel"]
    assert found.evidence["local_address_interface"] == "eth0"
    assert found.evidence["rule"] == "200: from 100.64.0.2/32 lookup main"


def test_stale_connection_from_the_lan_address_that_the_kernel_tunnels_is_not_a_leak():
    sock = SocketInfo("tcp", 4, "established", "100.64.0.2", 50000, "198.51.100.7", 443, 0, 31, mark=0, pids=(400,))
    assert run(state(sockets=(sock,), processes=(PY,)))[0] == []


def test_connection_of_a_bypassing_user_is_evidence_of_the_user_finding():
    sock = SocketInfo("tcp", 4, "established", "100.64.0.2", 50000, "198.51.100.7", 443, 1234, 31, mark=0,
                      pids=(200,))
    st = state(rules=(Rule(4, 100, "lookup", 254, uid_range=(1234, 1234)),), sockets=(sock,), processes=(SLEEPER,))
    findings, by_id = run(st)
    assert set(by_id) == {"perapp.user-bypasses-tunnel"}
    assert by_id["perapp.user-bypasses-tunnel"].evidence["connections"][0]["remote"] == "198.51.100.7:443"
