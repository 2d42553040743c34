"""The egress verdict: where does a packet to D leave, and which layer decided?

One answer per (destination, protocol/port, uid, mark, iif), asked by every
probe, so no two probes can disagree about the same packet. Three layers, in
the order the kernel applies them to a locally generated (or, with `iif`,
a forwarded) packet:

1. route: the kernel decides (RTM_GETROUTE with FIB match, honouring policy
   rules and the uid / mark / iif selectors; the mark is the one the
   firewall's route chains would give the packet). No route, a blackhole or
   unreachable route: "blocked"; a tunnel interface: "tunnel".
2. xfrm: a physical egress is "protected" when an out-policy with a
   tunnel-mode template covers it, "blocked" under a block policy.
3. firewall: a packet still leaving a physical interface in clear meets the
   output (or forward) filter chains: kill switches, lockdown tables,
   wg-quick's and vendor clients' tables. It is "blocked" when every packet
   class asked about is surely dropped. Without a protocol in the question
   the classes are ordinary traffic (TCP/443, TCP/80, UDP/443, UDP/53): a
   kill switch that lets out only the tunnel's own UDP to the server blocks
   all of them, and the evidence says so class by class.

`Egress.decided_by` names the layer (route / xfrm / firewall) and
`Egress.evidence()` carries the rule, route, policy or firewall rule that
decided, for findings to cite.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Sequence

from leakcheck.linux import firewall as fwl
from leakcheck.netstate import (ROUTE_PROTOCOLS, ROUTE_TYPES, Firewall, FirewallRule, IPAddress, NetState, Nexthop,
                                Route, Rule, XfrmPolicy, table_name)
from leakcheck.rtnl import Answer, Query, RouteLookup
from leakcheck.tunnel import Tunnel

if TYPE_CHECKING:
    from leakcheck.active import Observation

BLOCKING_TYPES = {"blackhole", "unreachable", "prohibit"}
IPPROTO = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}


class Layer(str, enum.Enum):
    """Which layer decided a verdict."""

    ROUTE = "route"
    XFRM = "xfrm"
    FIREWALL = "firewall"


@dataclass(frozen=True)
class PacketClass:
    """A kind of packet the firewall may treat differently: protocol and destination port."""

    proto: str  # tcp | udp | icmp | ipv6-icmp
    port: int | None = None

    def describe(self) -> str:
        return f"{self.proto.upper()}/{self.port}" if self.port is not None else self.proto.upper()


# What "traffic to D" means when a question names no protocol: web (TCP and QUIC) and DNS,
# the packets that reveal most and that a kill switch must stop.
ORDINARY_TRAFFIC = (PacketClass("tcp", 443), PacketClass("tcp", 80), PacketClass("udp", 443),
                    PacketClass("udp", 53))


@dataclass(frozen=True)
class FirewallDecision:
    """The filter chains' answer for each packet class at one hook."""

    hook: str  # output | forward
    verdicts: tuple[tuple[PacketClass, fwl.Verdict], ...]

    @functools.cached_property
    def blocked(self) -> bool:
        """Every class is surely dropped."""
        return bool(self.verdicts) and all(v.result == "drop" for _, v in self.verdicts)

    @property
    def open_classes(self) -> list[PacketClass]:
        """Classes the firewall surely lets out."""
        return [c for c, v in self.verdicts if v.result == "accept"]

    @property
    def result(self) -> str:
        """drop (every class), accept (some class surely passes) or uncertain."""
        if self.blocked:
            return "drop"
        return "accept" if self.open_classes else "uncertain"

    def evidence(self) -> dict[str, Any]:
        """The overall result with the chain and rule behind it, then class by class."""
        result = self.result
        deciding = next((v for _, v in self.verdicts if v.result == result), None)
        out: dict[str, Any] = dict(deciding.evidence()) if deciding is not None else {}
        out.update(result=result, hook=self.hook,
                   classes={c.describe(): v.evidence() for c, v in self.verdicts})
        return out

    @functools.cached_property
    def reason(self) -> str:
        return self.describe()

    def describe(self) -> str:
        first = next((v for _, v in self.verdicts if v.result == "drop"), None)
        by = ""
        if first is not None:
            by = f" by '{first.rule.text}'" if first.rule is not None else \
                (f" by the policy of {first.chain.table} {first.chain.name}" if first.chain else "")
        return f"dropped by the firewall's {self.hook} chain{by}"


class Path(str, enum.Enum):
    TUNNEL = "tunnel"  # leaves through a tunnel interface
    PROTECTED = "ipsec"  # leaves a physical interface, ESP-encapsulated by an xfrm policy
    CLEAR = "clear"  # leaves a physical interface in clear: outside the tunnel
    BLOCKED = "blocked"  # no route, blackhole, or an xfrm block/hold
    LOCAL = "local"  # delivered on this host


@dataclass(frozen=True)
class Egress:
    destination: IPAddress
    path: Path
    interface: str | None = None
    gateway: str | None = None
    route: Route | None = None
    rule: Rule | None = None
    xfrm_policy: XfrmPolicy | None = None
    error: str | None = None
    selectors: dict[str, Any] = field(default_factory=dict)
    firewall: FirewallDecision | None = None  # the filter chains' answer (physical egress in clear only)
    mark_rules: tuple[FirewallRule, ...] = ()  # firewall rules that marked the packet before routing

    @property
    def outside_tunnel(self) -> bool:
        return self.path is Path.CLEAR

    @property
    def decided_by(self) -> Layer:
        if self.firewall is not None and self.firewall.blocked and self.path is Path.BLOCKED:
            return Layer.FIREWALL
        if self.xfrm_policy is not None and self.path in (Path.PROTECTED, Path.BLOCKED):
            return Layer.XFRM
        return Layer.ROUTE

    @property
    def surely_open(self) -> bool:
        """In clear, and the (readable) firewall surely lets some packet class out: a test
        packet of another class that the firewall refused does not clear it."""
        return self.path is Path.CLEAR and self.firewall is not None and bool(self.firewall.open_classes)

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": str(self.destination), "path": self.path.value,
                               "interface": self.interface, "gateway": self.gateway,
                               "decided_by": self.decided_by.value}
        if self.selectors:
            out["as"] = dict(self.selectors)
        if self.route is not None:
            out["route"] = self.route.describe()
            out["route_table"] = table_name(self.route.table)
            out["route_protocol"] = self.route.protocol
        if self.rule is not None:
            out["rule"] = self.rule.describe()
        if self.xfrm_policy is not None:
            out["xfrm_policy"] = self.xfrm_policy.describe()
        if self.firewall is not None:
            out["firewall"] = self.firewall.evidence()
        if self.mark_rules:
            out["marked_by"] = [r.text for r in self.mark_rules]
        if self.error:
            out["error"] = self.error
        return out

    def describe(self) -> str:
        """Short human phrase: 'out of eth0 via 192.0.2.1 in clear'."""
        if self.path is Path.CLEAR:
            via = f" via {self.gateway}" if self.gateway else ""
            return f"out of {self.interface}{via} in clear"
        if self.path is Path.TUNNEL:
            return f"into the tunnel ({self.interface})"
        if self.path is Path.PROTECTED:
            return f"out of {self.interface}, encrypted by IPsec"
        if self.path is Path.BLOCKED and self.decided_by is Layer.FIREWALL and self.firewall is not None:
            return f"nowhere: routed out of {self.interface}, but {self.firewall.describe()}"
        if self.path is Path.BLOCKED:
            return "nowhere (blocked: " + (self.error or (self.route.type if self.route else "no route")) + ")"
        return "to this host"


class Oracle:
    """Answers egress questions against one NetState and one netlink socket."""

    def __init__(self, state: NetState, tunnel: Tunnel, lookup: RouteLookup | None = None):
        self.state = state
        self.tunnel = tunnel
        self._lookup = lookup
        # keyed by text: parsing each answer's prefix into ipaddress objects is
        # the dominant cost of a 20,000-lookup egress map
        self._routes = {(str(r.dst), r.table, r.type): r for r in state.routes}
        self._routes_by_prefix = {(str(r.dst), r.type): r for r in state.routes}
        self._rules = {4: state.rules_for(4), 6: state.rules_for(6)}
        fw = state.firewall
        # the firewall takes part only when it was read (without root it is not: no claims then)
        self.firewall: Firewall | None = fw if fw is not None and fw.sources else None
        self._setters = {f: (fwl.mark_setters(self.firewall, f) if self.firewall else []) for f in (4, 6)}
        # firewall verdicts are cached per region: the set of rule prefixes holding the
        # destination (every address of a region meets the same rules alike)
        self._fw_nets = {f: self.firewall_prefixes(f) for f in (4, 6)}
        self._fw_cache: dict[tuple, FirewallDecision] = {}
        self._mark_cache: dict[tuple, tuple[int, tuple[FirewallRule, ...]]] = {}

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    @property
    def lookup(self) -> RouteLookup:
        if self._lookup is None:
            self._lookup = RouteLookup()
        return self._lookup

    def query(self, dst: IPAddress | str, *, uid: int | None = None, mark: int | None = None,
              iif: str | None = None, src: IPAddress | str | None = None, ipproto: int | None = None,
              dport: int | None = None) -> Query:
        iif_index = None
        if iif is not None:
            link = self.state.link(iif)
            if link is None:
                raise ValueError(f"no interface named {iif}")
            iif_index = link.index
        return Query(dst=ipaddress.ip_address(dst), src=ipaddress.ip_address(src) if src else None,
                     iif=iif_index, mark=mark, uid=uid, ipproto=ipproto, dport=dport)

    def egress(self, dst: IPAddress | str, **selectors: Any) -> Egress:
        return self.egress_many([self.query(dst, **selectors)])[0]

    def egress_many(self, queries: Sequence[Query], explain: bool = True) -> list[Egress]:
        """Answers in query order. `explain=False` leaves out the inferred rule
        (evidence only), which bulk maps do not need."""
        marked = [self._with_firewall_mark(q) for q in queries]
        answers = self.lookup.lookup_many([q for q, _ in marked])
        return [self.classify(q, a, explain, mark_rules) for (q, mark_rules), a in zip(marked, answers)]

    def classify(self, query: Query, answer: Answer, explain: bool = True,
                 mark_rules: tuple[FirewallRule, ...] = ()) -> Egress:
        """The three layers in the kernel's order: route, xfrm, firewall."""
        selectors = _selectors(query, self.state) if explain else {}
        if answer.error:
            return Egress(query.dst, Path.BLOCKED, error=f"no route ({answer.error_name})",
                          selectors=selectors, mark_rules=mark_rules)
        route = self._route_for(answer)
        rule = self._deciding_rule(query, answer) if explain else None
        rtype = ROUTE_TYPES.get(answer.type or 0, "unicast")
        base = dict(route=route, rule=rule, selectors=selectors, mark_rules=mark_rules)
        if rtype in BLOCKING_TYPES:
            return Egress(query.dst, Path.BLOCKED, error=f"{rtype} route", **base)
        oif, gateway = self._first_hop(answer)
        ifname = self.state.ifname(oif)
        if rtype == "local" or ifname == "lo":
            return Egress(query.dst, Path.LOCAL, interface=ifname, **base)
        if self.tunnel.is_tunnel_interface(ifname):
            return Egress(query.dst, Path.TUNNEL, interface=ifname, gateway=gateway, **base)
        src = self._source(answer, ifname, query)
        policy = self.xfrm_policy_for(query.dst, src, query.ipproto)
        if policy is not None and policy.action == "block":
            return Egress(query.dst, Path.BLOCKED, interface=ifname, gateway=gateway,
                          xfrm_policy=policy, error="xfrm block policy", **base)
        if policy is not None and policy.protects:
            return Egress(query.dst, Path.PROTECTED, interface=ifname, gateway=gateway,
                          xfrm_policy=policy, **base)
        # in clear out of a physical interface: the firewall has the last word
        decision = self._firewall_decision(query, ifname, src) if self.firewall is not None else None
        if decision is not None and decision.blocked:
            return Egress(query.dst, Path.BLOCKED, interface=ifname, gateway=gateway, xfrm_policy=policy,
                          firewall=decision, error=decision.reason, **base)
        return Egress(query.dst, Path.CLEAR, interface=ifname, gateway=gateway, xfrm_policy=policy,
                      firewall=decision, **base)

    # -- the firewall layer ----------------------------------------------------------

    def packet_classes(self, query: Query) -> tuple[PacketClass, ...]:
        """The classes a question is about: its own protocol/port, or ordinary traffic."""
        if query.ipproto is not None:
            proto = _proto_name(query.ipproto) or str(query.ipproto)
            if proto == "icmp" and query.dst.version == 6:
                proto = "ipv6-icmp"
            return (PacketClass(proto, query.dport),)
        return ORDINARY_TRAFFIC

    def flow(self, query: Query, oif: str | None, src: IPAddress | None,
             packet: PacketClass | None = None) -> fwl.Flow:
        """The packet as the firewall sees it (None where the question does not say)."""
        uid = query.uid
        return fwl.Flow(family=query.dst.version, daddr=str(query.dst), saddr=str(src) if src else None,
                        iif=self.state.ifname(query.iif) if query.iif is not None else None, oif=oif,
                        uid=uid, gid=self.primary_gid(uid), mark=query.mark or 0,
                        l4proto=packet.proto if packet else (_proto_name(query.ipproto) if query.ipproto else None),
                        dport=packet.port if packet else query.dport)

    def _region(self, dst: IPAddress) -> tuple[int, ...]:
        nets = self._fw_nets[dst.version]
        return tuple(i for i, net in enumerate(nets) if dst in net) if nets else ()

    def _firewall_decision(self, query: Query, oif: str | None, src: IPAddress | None) -> FirewallDecision:
        hook = "forward" if query.iif is not None else "output"
        family = query.dst.version
        key = (hook, family, self._region(query.dst), src, query.iif, oif, query.uid, query.mark or 0,
               query.ipproto, query.dport)
        cached = self._fw_cache.get(key)
        if cached is not None:
            return cached
        assert self.firewall is not None
        verdicts = tuple((packet, fwl.filter_verdict(self.firewall, hook, self.flow(query, oif, src, packet)))
                         for packet in self.packet_classes(query))
        decision = FirewallDecision(hook, verdicts)
        self._fw_cache[key] = decision
        return decision

    def firewall_prefixes(self, family: int) -> list[Any]:
        """Destination prefixes the firewall's rules name: where its verdict may change
        (boundaries of an exact egress map)."""
        if self.firewall is None:
            return []
        out: list[Any] = []
        for rule in self.firewall.rules:
            for text in rule.daddrs:
                net = ipaddress.ip_network(text)
                if net.version == family and net not in out:
                    out.append(net)
        return out

    def _with_firewall_mark(self, query: Query) -> tuple[Query, tuple[FirewallRule, ...]]:
        """A locally generated packet carries the mark the firewall's route chains give it
        (nftables `type route hook output`, iptables mangle OUTPUT) before the kernel routes it."""
        family = query.dst.version
        if query.iif is not None or query.mark is not None or not self._setters[family] or self.firewall is None:
            return query, ()
        key = (family, self._region(query.dst), query.src, query.uid, query.ipproto, query.dport)
        found = self._mark_cache.get(key)
        if found is None:
            sets = fwl.marks_for(self.firewall, self.flow(query, None, query.src))
            found = (fwl.effective_mark(sets), tuple(s.rule for s in sets if s.certain))
            self._mark_cache[key] = found
        mark, rules = found
        if not mark:
            return query, ()
        return replace(query, mark=mark), rules

    def firewall_mark(self, dst: IPAddress | str, uid: int | None = None) -> tuple[int, list[FirewallRule]]:
        """The mark the firewall surely gives a locally generated packet to `dst` from `uid`,
        and the rules that set it (0, [] when none)."""
        if self.firewall is None:
            return 0, []
        query = self.query(dst, uid=uid)
        sets = fwl.marks_for(self.firewall, self.flow(query, None, None, PacketClass("udp")))
        return fwl.effective_mark(sets), [s.rule for s in sets if s.certain]

    def mark_setters(self) -> list[FirewallRule]:
        """Every firewall rule that sets a constant packet mark before routing (both families)."""
        return list({id(r): r for family in (4, 6) for r in self._setters[family]}.values())

    def nat_rules(self, query: Query, oif: str | None) -> list[FirewallRule]:
        """Source NAT rules (masquerade / snat) that may apply to the packet leaving `oif`."""
        if self.firewall is None:
            return []
        flow = self.flow(query, oif, query.src, PacketClass("udp"))
        return [r for r in fwl.nat_rules(self.firewall, query.dst.version) if fwl.rule_matches(r, flow) is not False]

    # -- accounts (from the network state, read once per run) ---------------------------

    def primary_gid(self, uid: int | None) -> int | None:
        if uid is None:
            return None
        account = self.state.accounts.get(uid)
        return account[1] if account else None

    def user_name(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        account = self.state.accounts.get(uid)
        return account[0] if account else None

    # -- the xfrm layer -------------------------------------------------------------

    def xfrm_policy_for(self, dst: IPAddress, src: IPAddress | None,
                        ipproto: int | None = None) -> XfrmPolicy | None:
        """The out-policy the kernel would apply: lowest priority value first."""
        for policy in self.state.out_policies(dst.version):
            if dst not in policy.dst:
                continue
            if src is not None and src.version == dst.version and src not in policy.src:
                continue
            if policy.ipproto and policy.ipproto not in ("any", _proto_name(ipproto)):
                continue
            return policy
        return None

    def _source(self, answer: Answer, ifname: str | None, query: Query) -> IPAddress | None:
        if query.src is not None:
            return query.src
        if answer.prefsrc:
            return ipaddress.ip_address(answer.prefsrc)
        if ifname:
            candidates = self.state.addresses_of(ifname, query.dst.version)
            universe = [a for a in candidates if a.scope == 0] or candidates
            if universe:
                return universe[0].address
        return None

    def _first_hop(self, answer: Answer) -> tuple[int | None, str | None]:
        if answer.oif is not None:
            return answer.oif, answer.gateway
        if answer.multipath:
            return answer.multipath[0]
        return None, answer.gateway

    def _route_for(self, answer: Answer) -> Route | None:
        if answer.prefix is None:
            return None
        rtype = ROUTE_TYPES.get(answer.type or 0, "unicast")
        route = self._routes.get((answer.prefix, answer.table, rtype))
        if route is None:  # the kernel may report another table id (e.g. local routes)
            route = self._routes_by_prefix.get((answer.prefix, rtype))
        if route is not None:
            return route
        return Route(dst=ipaddress.ip_network(answer.prefix, strict=False), table=answer.table or 0, type=rtype,
                     protocol=ROUTE_PROTOCOLS.get(answer.protocol or 0, "unspec"), scope=answer.scope or 0,
                     nexthops=(Nexthop(answer.oif, self.state.ifname(answer.oif), answer.gateway),))

    def _deciding_rule(self, query: Query, answer: Answer) -> Rule | None:
        """The first rule that matches the lookup and points at the answer's table
        (evidence: the kernel does not say which rule it used)."""
        iif = self.state.ifname(query.iif) if query.iif is not None else None
        prefixlen = int(answer.prefix.rsplit("/", 1)[1]) if answer.prefix else 0
        for rule in self._rules[query.dst.version]:
            if rule.action != "lookup" or rule.table != answer.table:
                continue
            if rule.suppress_prefixlen is not None and prefixlen <= rule.suppress_prefixlen:
                continue  # this rule rejects such broad routes; a later one decided
            if rule.matches(dst=query.dst, src=query.src, iif=iif, mark=query.mark or 0,
                            uid=query.uid or 0, ipproto=query.ipproto, dport=query.dport):
                return rule
        return None


def _selectors(query: Query, state: NetState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if query.uid is not None:
        out["uid"] = query.uid
    if query.mark is not None:
        out["mark"] = hex(query.mark)
    if query.iif is not None:
        out["iif"] = state.ifname(query.iif)
    if query.src is not None:
        out["src"] = str(query.src)
    if query.ipproto is not None:
        out["ipproto"] = _proto_name(query.ipproto)
    if query.dport is not None:
        out["dport"] = query.dport
    return out


def _proto_name(number: int | None) -> str | None:
    return {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}.get(number or -1, str(number) if number else None)


def confirm(egress: Egress, obs: "Observation | None") -> tuple[bool, str]:
    """The verdict combined with a test packet: (leaks, method). A packet seen in clear is a
    leak whatever the layers say; a test packet the firewall refused clears the verdict only
    when the firewall does not surely let another class of packet out (then the probes that
    infer and the probes that observe would disagree)."""
    from leakcheck.active import confirm as combine
    leaks, method = combine(egress.outside_tunnel, obs)
    if not leaks and egress.surely_open and not (obs is not None and obs.outcome == "clear"):
        return True, "inferred"
    return leaks, method
