"""Do some users, apps or marked sockets bypass the tunnel?

Linux can route by who sends a packet, not only where it goes: policy rules
select tables by `uidrange` and `fwmark`; the firewall (nftables /
iptables) can mark packets by owner uid, gid or cgroup before routing; an
app can bind its socket to a physical device (SO_BINDTODEVICE) and skip
routing altogether. The canary destinations are asked of the kernel as
each user (every uid with a process in this network namespace or a login,
and every uid a `uidrange` rule or firewall rule names), with the mark the
firewall would give that user's packets; then with every mark used by a
policy rule, the firewall or a live socket; then every live socket is
checked. Only what differs from an ordinary user's path counts: if the
canaries leave outside the tunnel for everybody, the routes probe says so.

- `perapp.user-bypasses-tunnel`: a user's traffic leaves outside the tunnel
  (a `uidrange` policy rule, or a firewall rule that marks their packets).
  Names the user, the deciding rule and their running processes.
- `perapp.cgroup-bypasses-tunnel`: the firewall marks packets of a cgroup
  (app-based split tunnelling) with a mark that leaves outside the tunnel.
- `perapp.mark-bypasses-tunnel`: packets with a firewall mark leave outside
  the tunnel, and the firewall or a live socket (not the VPN's own) sets
  it. A mark only a policy rule names, that nothing sets, is a warning:
  any privileged process could use it.
- `perapp.socket-bound-to-physical-interface`: a process's socket is bound
  to a physical device and talks to a public address outside the tunnel
  (an unconnected one, which can send anywhere, is a warning). Names the
  process (pid, name, exe), its user and the connection.
- `perapp.connection-outside-tunnel`: a live connection to a public address
  leaves outside the tunnel for a reason not named above (e.g. a rule on
  its source address).
- `perapp.partial-check` (info): what could not be seen (not root: other
  users' processes, socket marks and the firewall).
- `perapp.no-tunnel` (info): no tunnel is up, so there is nothing to bypass
  (the routes probe reports the direct path).

Expected, never findings: the VPN client's own sockets (a process holding
/dev/net/tun or a known VPN client, or a socket to the VPN server) and the
VPN's own mark (wg-quick's `not fwmark 51820 lookup 51820`); unconnected
sockets of LAN services (DHCP, mDNS, LLMNR, SSDP, NetBIOS) or bound to a
link without a default route; non-public remote addresses;
managed exceptions (`policy.allowed_direct`). When active checks run, a
test packet is sent as each user and with each bypassing mark, and the
evidence says "method": "observed" or "inferred".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable

from leakcheck.active import Observation
from leakcheck.active import Probe as ActivePacket
from leakcheck.active import confirm
from leakcheck.addrspace import first_public_address, is_public
from leakcheck.errors import ProbeSkipped
from leakcheck.netstate import Activity, Firewall, FirewallRule, ProcessInfo, SocketInfo
from leakcheck.oracle import Egress, Path
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance
from leakcheck.rtnl import Query
from leakcheck.tunnel import family_gap, vpn_endpoints, vpn_marks

FULL_MASK = 0xFFFFFFFF
CANARY_PORT = 33434
MAX_UIDS = 64  # users asked of the kernel (those with rules, processes and logins come first)
MAX_ACTIVE = 24  # test packets per run
MAX_LISTED = 8  # processes / sockets listed per finding
# Candidates for an "ordinary user" that no uid rule names (nobody first).
REFERENCE_UIDS = (65534, 65533, 60001, 4294967294, 2147483647)
# Sockets that only ever talk to the local network: DHCP, DHCPv6, NTP-less LAN discovery.
LAN_SERVICE_PORTS = {67, 68, 137, 138, 546, 547, 1900, 3702, 5353, 5355}
# VPN clients by process name, for when /dev/net/tun is not what they hold (kernel
# WireGuard helpers, IPsec daemons, DCO OpenVPN).
VPN_CLIENTS = {"openvpn", "openconnect", "vpnc", "charon", "charon-systemd", "pluto", "racoon", "iked",
               "wireguard-go", "boringtun", "boringtun-cli", "tailscaled", "nordvpnd", "mullvad-daemon",
               "expressvpnd", "warp-svc", "zerotier-one", "pppd", "sstpc", "xl2tpd", "vpnagentd",
               "PanGPS", "forticlient", "openfortivpn", "netbird", "nebula", "headscale", "ipsec"}


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Target:
    """A canary destination that an ordinary user's traffic sends into the tunnel."""

    dst: Any
    reference: Egress


@dataclass
class Bypass:
    """One subject (user, mark, cgroup) whose traffic leaves outside the tunnel."""

    kind: str  # user | mark | cgroup
    key: Any  # uid, mark or cgroup selector
    egress: Egress | None  # the first bypassing answer (None: observed only)
    destinations: list[str] = field(default_factory=list)
    mark: int = 0  # the mark its packets carry (users: the one the firewall gives them)
    setters: list[FirewallRule] = field(default_factory=list)  # firewall rules behind it
    inferred: bool = True
    observation: Observation | None = None
    leaks: bool = True
    method: str = "inferred"
    sockets: list[SocketInfo] = field(default_factory=list)
    warn_only: bool = False  # a mark nothing sets yet


class PerAppProbe(Probe):
    """Users, apps (cgroups), marked packets and bound sockets that bypass the tunnel."""

    name = "perapp"
    leak_class = "users, apps or marked sockets bypassing the tunnel"
    finding_ids = ("perapp.user-bypasses-tunnel", "perapp.cgroup-bypasses-tunnel", "perapp.mark-bypasses-tunnel",
                   "perapp.socket-bound-to-physical-interface", "perapp.connection-outside-tunnel",
                   "perapp.partial-check", "perapp.no-tunnel")
    checks = ("full-tunnel", "forced")

    def run(self, ctx: ProbeContext) -> list[Finding]:
        if not ctx.tunnel.up:
            # Nothing can bypass a tunnel that is not there; said as a note, not a skip (a
            # skip means "could not check"), and the routes probe reports the direct path.
            return [self._no_tunnel(ctx)]
        activity = ctx.state.activity or Activity(limits=("processes and sockets were not read",))
        fw = ctx.state.firewall or Firewall(unreadable=("the firewall was not read",))
        ref_uid = reference_uid(ctx, fw)
        targets = self._targets(ctx, ref_uid)
        if not targets:
            raise ProbeSkipped("no canary destination goes into the tunnel even for an ordinary user "
                               "(the routes and split probes report where it goes)")
        users = self._users(ctx, targets, fw, activity, ref_uid)
        marks, cgroups = self._marks(ctx, targets, fw, activity, ref_uid)
        self._observe(ctx, targets, users, marks + cgroups)
        socket_findings = self._sockets(ctx, activity, ref_uid, users, marks)
        findings = [self._user_finding(ctx, group, activity) for group in _group(users)]
        findings += [self._cgroup_finding(b, activity) for b in cgroups if b.leaks]
        findings += [self._mark_finding(ctx, b, activity) for b in marks if b.leaks]
        findings += socket_findings
        partial = self._partial(activity, fw, ctx)
        if partial is not None:
            findings.append(partial)
        return findings

    # -- which destinations, as whom ------------------------------------------------

    def _targets(self, ctx: ProbeContext, ref_uid: int | None) -> list[Target]:
        dsts = [d for family in (4, 6)
                if not family_gap(ctx.state, ctx.tunnel, family)  # the ipv6 probe's case
                for d in ctx.destinations(family)[0]]
        dsts = [d for d in dsts if not ctx.is_allowed_direct(d)]
        # an ordinary user's packets, with whatever mark the firewall gives them
        marks = [ctx.oracle.firewall_mark(d, ref_uid)[0] for d in dsts]
        egresses = ctx.oracle.egress_many([ctx.oracle.query(d, uid=ref_uid, mark=m or None)
                                           for d, m in zip(dsts, marks)])
        return [Target(d, e) for d, e in zip(dsts, egresses) if e.path is not Path.CLEAR]

    def _uids(self, ctx: ProbeContext, fw: Firewall, activity: Activity, ref_uid: int | None) -> list[int]:
        named: list[int] = []
        for rule in ctx.state.rules:
            if rule.uid_range:
                named += [rule.uid_range[0], rule.uid_range[1]]
        for setter in ctx.oracle.mark_setters():
            for lo, hi in setter.uids:
                if "uids" not in setter.negated:
                    named += [lo, hi]
        running = [p.uid for p in activity.processes] + [uid for _, uid in activity.logins]
        ordered = list(dict.fromkeys(named + sorted(set(running))))
        return [u for u in ordered if u != ref_uid and 0 <= u < FULL_MASK][:MAX_UIDS]

    def _users(self, ctx: ProbeContext, targets: list[Target], fw: Firewall, activity: Activity,
               ref_uid: int | None) -> list[Bypass]:
        """Every evaluated uid, bypassing or not (the active check needs them all)."""
        uids = self._uids(ctx, fw, activity, ref_uid)
        plans = []
        for uid in uids:
            for target in targets:
                mark, setters = ctx.oracle.firewall_mark(target.dst, uid)
                plans.append((uid, target, mark, setters))
        queries = [ctx.oracle.query(t.dst, uid=uid, mark=mark or None) for uid, t, mark, _ in plans]
        answers = ctx.oracle.egress_many(queries)
        out: dict[int, Bypass] = {uid: Bypass("user", uid, None, inferred=False, leaks=False) for uid in uids}
        for (uid, target, mark, setters), egress in zip(plans, answers):
            if egress.path is not Path.CLEAR:
                continue
            entry = out[uid]
            if entry.egress is None:
                entry.egress, entry.mark, entry.inferred, entry.leaks = egress, mark, True, True
                entry.setters = [r for r in setters if r.uids or r.gids]
            entry.destinations.append(str(target.dst))
        return list(out.values())

    # -- marks and cgroups ----------------------------------------------------------

    def _marks(self, ctx: ProbeContext, targets: list[Target], fw: Firewall, activity: Activity,
               ref_uid: int | None) -> tuple[list[Bypass], list[Bypass]]:
        setters = ctx.oracle.mark_setters()
        candidates = self._candidate_marks(ctx, setters, activity)
        if not candidates:
            return [], []
        probes: list[tuple[int, Any]] = []
        for mark in candidates:
            dsts = [t.dst for t in targets]
            for rule in setters:
                if rule.set_mark == mark and rule.daddrs and "daddrs" not in rule.negated:
                    dsts += _sample_addresses(rule.daddrs)
            probes += [(mark, d) for d in dict.fromkeys(dsts)]
        refs = {t.dst: t.reference for t in targets}
        extra = [d for _, d in probes if d not in refs]
        # the path without the mark (mark 0: the oracle adds no firewall mark), to compare with
        unmarked = ctx.oracle.egress_many([ctx.oracle.query(d, uid=ref_uid, mark=0) for d in extra])
        for dst, egress in zip(extra, unmarked):
            refs[dst] = egress
        answers = ctx.oracle.egress_many([ctx.oracle.query(d, uid=ref_uid, mark=m) for m, d in probes])
        bypassing: dict[int, Bypass] = {}
        for (mark, dst), egress in zip(probes, answers):
            if egress.path is not Path.CLEAR or refs[dst].path is Path.CLEAR or ctx.is_allowed_direct(dst):
                continue
            entry = bypassing.setdefault(mark, Bypass("mark", mark, egress, mark=mark))
            entry.destinations.append(str(dst))
        return self._classify_marks(ctx, bypassing, list(setters), activity)

    def _candidate_marks(self, ctx: ProbeContext, setters: Iterable[FirewallRule], activity: Activity) -> list[int]:
        marks = [r.fwmark & (r.fwmask if r.fwmask is not None else FULL_MASK)
                 for r in ctx.state.rules if r.fwmark]
        marks += [r.set_mark for r in setters if r.set_mark]
        marks += [s.mark for s in activity.sockets if s.mark]
        return [m for m in dict.fromkeys(marks) if m]

    def _classify_marks(self, ctx: ProbeContext, bypassing: dict[int, Bypass], setters: list[FirewallRule],
                        activity: Activity) -> tuple[list[Bypass], list[Bypass]]:
        own = vpn_own_marks(ctx, activity)
        marks, cgroups = [], []
        for mark, entry in bypassing.items():
            by_mark = [r for r in setters if r.set_mark == mark]
            for rule in by_mark:
                if rule.cgroups and "cgroups" not in rule.negated:
                    cgroups.append(Bypass("cgroup", rule.cgroups, entry.egress, list(entry.destinations),
                                          mark=mark, setters=[rule]))
            # uid/gid setters are the users' findings; cgroup setters just above
            others = [r for r in by_mark if not r.selects_by_owner or set(r.negated) & {"uids", "gids", "cgroups"}]
            users_sockets = [s for s in activity.sockets if s.mark == mark and not is_vpn_socket(ctx, s, activity)]
            if others or users_sockets:
                entry.setters, entry.sockets = others, users_sockets
                marks.append(entry)
            elif not by_mark and mark not in own:
                entry.warn_only = True  # only a policy rule names it: nothing uses it yet
                marks.append(entry)
        return marks, cgroups

    # -- active evidence ------------------------------------------------------------

    def _observe(self, ctx: ProbeContext, targets: list[Target], users: list[Bypass], marks: list[Bypass]) -> None:
        """One test packet per user and per bypassing mark, per family; all in one capture window."""
        firsts = {}
        for target in targets:
            firsts.setdefault(target.dst.version, target.dst)
        sends: list[tuple[Bypass, ActivePacket]] = []
        for entry in sorted(users, key=lambda b: not b.inferred) + [m for m in marks if m.kind == "mark"]:
            for dst in firsts.values():
                if entry.kind == "user":
                    sends.append((entry, ActivePacket("udp", str(dst), CANARY_PORT, uid=entry.key)))
                else:
                    sends.append((entry, ActivePacket("udp", str(dst), CANARY_PORT, mark=entry.key)))
        sends = sends[:MAX_ACTIVE]
        observations = ctx.observe([packet for _, packet in sends])
        if not observations:
            return
        for (entry, _), obs in zip(sends, observations):
            if entry.observation is None or obs.outcome == "clear":
                entry.observation = obs
        for entry in users + marks:
            entry.leaks, entry.method = confirm(entry.inferred, entry.observation)

    # -- live sockets ---------------------------------------------------------------

    def _sockets(self, ctx: ProbeContext, activity: Activity, ref_uid: int | None, users: list[Bypass],
                 marks: list[Bypass]) -> list[Finding]:
        """Findings for sockets; live connections explained by a user/mark bypass go into its evidence."""
        upstream = upstream_interfaces(ctx)
        bound, connected = [], []
        for sock in activity.sockets:
            if is_vpn_socket(ctx, sock, activity):
                continue
            if sock.bound_device and not ctx.tunnel.is_tunnel_interface(sock.bound_device) \
                    and sock.bound_device != "lo":
                if sock.remote is None and (sock.local_port in LAN_SERVICE_PORTS
                                            or sock.bound_device not in upstream):
                    continue  # serves the local network (DHCP, mDNS...) or a downstream link
                bound.append(sock)
            elif sock.remote and not sock.bound_device:
                connected.append(sock)
        bound = [s for s in bound if s.remote is None or _public_unexcepted(ctx, s.remote)]
        connected = [s for s in connected if _public_unexcepted(ctx, s.remote)]
        remotes = list(dict.fromkeys(s.remote for s in bound + connected if s.remote))
        refs = dict(zip(remotes, ctx.oracle.egress_many([ctx.oracle.query(r, uid=ref_uid) for r in remotes])))
        findings: list[Finding] = []
        bound_live = [s for s in bound if s.remote is not None and refs[s.remote].path is not Path.CLEAR]
        for sock, egress in zip(bound_live, self._bound_egress(ctx, bound_live)):
            if egress.path is Path.CLEAR:
                findings.append(self._bound_finding(ctx, sock, egress, activity))
        for sock in bound:
            if sock.remote is None:
                findings.append(self._bound_finding(ctx, sock, None, activity))
        live = [s for s in connected if refs[s.remote].path is not Path.CLEAR]  # type: ignore[index]
        queries = [Query(dst=ipaddress.ip_address(s.remote), src=_source(s), mark=s.mark or None,
                         uid=s.uid if s.uid >= 0 else None) for s in live]
        for sock, egress in zip(live, ctx.oracle.egress_many(queries)):
            if egress.path is not Path.CLEAR:
                continue
            owner = next((b for b in users if b.leaks and b.key == sock.uid), None) or \
                next((b for b in marks if b.leaks and sock.mark and b.key == sock.mark), None)
            if owner is not None:
                owner.sockets.append(sock)  # shown as evidence of that user's / mark's finding
                continue
            findings.append(self._connection_finding(ctx, sock, egress, activity))
        return findings

    def _bound_egress(self, ctx: ProbeContext, socks: list[SocketInfo]) -> list[Egress]:
        """The kernel's answer for a socket bound to a device (output lookup with oif)."""
        queries = []
        for sock in socks:
            link = ctx.state.link(sock.bound_device)
            queries.append(Query(dst=ipaddress.ip_address(sock.remote), src=_source(sock),
                                 oif=link.index if link else None, mark=sock.mark or None,
                                 uid=sock.uid if sock.uid >= 0 else None))
        out = []
        for sock, egress in zip(socks, ctx.oracle.egress_many(queries)):
            if egress.path is Path.BLOCKED and egress.route is None and egress.xfrm_policy is None:
                # No FIB answer for that device: the kernel still sends a bound socket's packets
                # out of it (on-link); only IPsec policy can then cover them.
                out.append(_bound_fallback(ctx, sock, egress))
            else:
                out.append(egress)
        return out

    # -- findings -------------------------------------------------------------------

    def _user_finding(self, ctx: ProbeContext, group: list[Bypass], activity: Activity) -> Finding:
        first = group[0]
        egress = first.egress
        people = [_user_text(ctx, b.key) for b in group]
        procs = [p for b in group for p in activity.processes if p.uid == b.key]
        observed = [b for b in group if b.method == "observed" and b.observation is not None]
        if first.setters:
            why = (f"the firewall marks their packets ({first.setters[0].text}) and the mark "
                   f"{first.mark:#x} is routed around the tunnel")
        elif egress is not None and egress.rule is not None and egress.rule.uid_range:
            why = f"the policy rule '{egress.rule.describe()}' sends their traffic to table {_table(egress)}"
        elif egress is not None and egress.rule is not None:
            why = f"the policy rule '{egress.rule.describe()}' decides for them"
        elif egress is None:
            why = "a test packet sent as them was seen leaving in clear (no rule leakcheck reads explains it)"
        else:
            why = "their route lookup ends outside the tunnel"
        where = egress.describe() if egress is not None else f"out of {', '.join(first.observation.clear_on)}"  # type: ignore[union-attr]
        summary = f"Traffic of {_join(people)} bypasses the VPN: {why}, so it goes {where}."
        if procs:
            summary += " Running now: " + ", ".join(f"{p.name} (pid {p.pid})" for p in procs[:4]) + \
                       (f" and {len(procs) - 4} more" if len(procs) > 4 else "") + "."
        else:
            summary += " No process of theirs runs now; any they start will leak."
        if observed:
            obs = observed[0].observation
            summary += f" Observed: a test packet sent as uid {observed[0].key} left {', '.join(obs.clear_on)} in clear."  # type: ignore[union-attr]
        evidence: dict[str, Any] = {
            "users": [{"uid": b.key, "user": _user_name(ctx, b.key), "destinations": b.destinations,
                       "method": b.method, **({"observed": b.observation.evidence()} if b.observation else {})}
                      for b in group],
            "method": "observed" if observed else "inferred",
            "processes": [p.evidence() for p in procs[:MAX_LISTED]],
            "process_count": len(procs),
            "connections": [_socket_evidence(ctx, s, activity) for b in group for s in b.sockets][:MAX_LISTED],
        }
        if first.setters:
            evidence["firewall_rules"] = [r.text for r in first.setters]
            evidence["mark"] = hex(first.mark)
        if egress is not None:
            evidence.update(egress.evidence())
        fix = ("Remove the rule that routes these users around the tunnel (ip rule del ...), or the firewall "
               "rule that marks their packets; if some user must bypass the VPN, make it a managed, "
               "documented exception limited to named destinations (policy.allowed_direct).")
        return self.finding("perapp.user-bypasses-tunnel", Severity.HIGH, summary, evidence, fix,
                            Guidance.FULL_TUNNEL)

    def _cgroup_finding(self, entry: Bypass, activity: Activity) -> Finding:
        rule = entry.setters[0]
        selectors = [c for c in entry.key]
        paths = [c.split(":", 1)[1] for c in selectors if c.startswith("cgroupv2:")]
        procs = [p for p in activity.processes if p.cgroup and any(
            p.cgroup.strip("/") == path or p.cgroup.strip("/").startswith(path + "/") for path in paths)]
        names = ", ".join(c.replace("cgroupv2:", "cgroup ").replace("classid:", "net_cls classid ")
                          for c in selectors)
        summary = (f"Apps in {names} bypass the VPN: the firewall rule '{rule.text}' marks their packets "
                   f"{entry.mark:#x}, which is routed {entry.egress.describe() if entry.egress else 'outside the tunnel'} "
                   f"(app-based split tunnelling).")
        if procs:
            summary += " Running now: " + ", ".join(f"{p.name} (pid {p.pid})" for p in procs[:4]) + "."
        evidence = {"cgroups": selectors, "firewall_rule": rule.text, "mark": hex(entry.mark),
                    "destinations": entry.destinations, "method": entry.method,
                    "processes": [p.evidence() for p in procs[:MAX_LISTED]]}
        if entry.egress is not None:
            evidence.update(entry.egress.evidence())
        fix = ("Turn off app-based split tunnelling (the VPN client's excluded-apps list), or remove the "
               "firewall rule that marks that cgroup's packets.")
        return self.finding("perapp.cgroup-bypasses-tunnel", Severity.HIGH, summary, evidence, fix,
                            Guidance.FULL_TUNNEL)

    def _mark_finding(self, ctx: ProbeContext, entry: Bypass, activity: Activity) -> Finding:
        where = entry.egress.describe() if entry.egress else "outside the tunnel"
        evidence: dict[str, Any] = {"mark": hex(entry.mark), "destinations": entry.destinations,
                                    "method": entry.method,
                                    "firewall_rules": [r.text for r in entry.setters],
                                    "sockets": [_socket_evidence(ctx, s, activity) for s in entry.sockets][:MAX_LISTED]}
        if entry.observation is not None:
            evidence["observed"] = entry.observation.evidence()
        if entry.egress is not None:
            evidence.update(entry.egress.evidence())
        rule = entry.egress.rule.describe() if entry.egress and entry.egress.rule else None
        if entry.warn_only:
            summary = (f"Packets marked {entry.mark:#x} go {where}"
                       + (f" (policy rule '{rule}')" if rule else "")
                       + "; nothing marks packets that way now, but any privileged process could.")
            fix = "Remove the policy rule for this mark if nothing needs it."
            return self.finding("perapp.mark-bypasses-tunnel", Severity.LOW, summary, evidence, fix,
                                Guidance.FULL_TUNNEL, Effect.WARN)
        who = []
        if entry.setters:
            who.append(f"the firewall rule '{entry.setters[0].text}'")
        if entry.sockets:
            owners = [p for s in entry.sockets for p in activity.owners(s)]
            who.append("sockets of " + (", ".join(f"{p.name} (pid {p.pid})" for p in owners[:4])
                                        or f"uid {entry.sockets[0].uid}"))
        summary = f"Packets marked {entry.mark:#x} by {' and '.join(who)} go {where}, around the tunnel."
        if entry.method == "observed" and entry.observation is not None:
            summary += f" Observed: a test packet with that mark left {', '.join(entry.observation.clear_on)} in clear."
        fix = ("Remove the firewall rule (or the app setting SO_MARK) that marks these packets, or the policy "
               "rule that routes the mark around the tunnel; keep the bypass mark for the VPN's own packets only.")
        return self.finding("perapp.mark-bypasses-tunnel", Severity.HIGH, summary, evidence, fix,
                            Guidance.FULL_TUNNEL)

    def _bound_finding(self, ctx: ProbeContext, sock: SocketInfo, egress: Egress | None,
                       activity: Activity) -> Finding:
        owners = activity.owners(sock)
        who = _owners_text(sock, owners)
        evidence: dict[str, Any] = {**_socket_evidence(ctx, sock, activity), "method": "inferred",
                                    "decided_by": "live sockets (sock_diag): bound device"}
        if egress is None:
            summary = (f"{who} has a {sock.protocol.upper()} socket bound to {sock.bound_device} "
                       f"(SO_BINDTODEVICE, local port {sock.local_port}) that is not connected: it can send "
                       f"to any address straight out of {sock.bound_device}, around the tunnel.")
            fix = (f"Find out what {owners[0].name if owners else 'the process'} sends; stop it binding to "
                   f"{sock.bound_device} or make it a managed exception.")
            return self.finding("perapp.socket-bound-to-physical-interface", Severity.MEDIUM, summary, evidence,
                                fix, Guidance.FULL_TUNNEL, Effect.WARN)
        evidence.update(egress.evidence())
        evidence["decided_by"] = "live sockets (sock_diag) + kernel route lookup with the bound device"
        summary = (f"{who} is bound to {sock.bound_device} (SO_BINDTODEVICE) and talks to "
                   f"{sock.remote} port {sock.remote_port} over {sock.protocol.upper()}: its traffic goes "
                   f"{egress.describe()}, skipping the tunnel.")
        fix = (f"Stop {owners[0].name if owners else 'the process'} binding to {sock.bound_device} (an app "
               f"setting such as 'bind to interface'), or allow that destination as a managed exception; a "
               f"firewall kill switch that drops traffic leaving {sock.bound_device} except to the VPN server "
               f"stops it.")
        return self.finding("perapp.socket-bound-to-physical-interface", Severity.HIGH, summary, evidence, fix,
                            Guidance.FULL_TUNNEL)

    def _connection_finding(self, ctx: ProbeContext, sock: SocketInfo, egress: Egress,
                            activity: Activity) -> Finding:
        who = _owners_text(sock, activity.owners(sock))
        on_physical = _address_interface(ctx, sock.local)
        evidence = {**_socket_evidence(ctx, sock, activity), **egress.evidence(), "method": "inferred",
                    "local_address_interface": on_physical}
        summary = (f"{who} has a live {sock.protocol.upper()} connection from {sock.local} to {sock.remote} "
                   f"port {sock.remote_port} that goes {egress.describe()}, outside the tunnel"
                   + (f" (rule '{egress.rule.describe()}')" if egress.rule else "") + ".")
        fix = ("Remove the rule or setting that routes this connection around the tunnel and restart the "
               "application so it reconnects through the VPN.")
        return self.finding("perapp.connection-outside-tunnel", Severity.HIGH, summary, evidence, fix,
                            Guidance.FULL_TUNNEL)

    def _no_tunnel(self, ctx: ProbeContext) -> Finding:
        summary = (f"No VPN tunnel is up ({ctx.tunnel.state}), so no user, app or socket has a tunnel to "
                   f"bypass: all traffic leaves directly (the routes probe reports where).")
        return self.finding("perapp.no-tunnel", Severity.INFO, summary, {"tunnel_state": ctx.tunnel.state},
                            "Connect the VPN.", Guidance.FULL_TUNNEL, Effect.INFO)

    def _partial(self, activity: Activity, fw: Firewall, ctx: ProbeContext) -> Finding | None:
        limits = list(activity.limits) + [f"firewall: {u}" for u in fw.unreadable]
        if not limits:
            return None
        summary = ("Parts of this check could not see everything: " + "; ".join(limits) +
                   (". Run as root for the full check." if not ctx.is_root else "."))
        return self.finding("perapp.partial-check", Severity.INFO, summary,
                            {"limits": limits, "root": ctx.is_root, "socket_source": activity.socket_source},
                            "Run leakcheck as root (the agent service does).", Guidance.FULL_TUNNEL, Effect.INFO)


# ---------------------------------------------------------------- helpers

def reference_uid(ctx: ProbeContext, fw: Firewall) -> int | None:
    """A uid no uid rule (policy or firewall) names: what an ordinary user gets."""
    ranges = [r.uid_range for r in ctx.state.rules if r.uid_range]
    ranges += [rng for r in ctx.oracle.mark_setters() for rng in r.uids]
    for uid in REFERENCE_UIDS:
        if not any(lo <= uid <= hi for lo, hi in ranges):
            return uid
    return None


def upstream_interfaces(ctx: ProbeContext) -> set[str]:
    """Non-tunnel interfaces with a default route in some table: the ways to the internet."""
    return {name for route in ctx.state.routes if route.is_default and route.type == "unicast"
            for name in route.ifnames if not ctx.tunnel.is_tunnel_interface(name)}


def vpn_own_marks(ctx: ProbeContext, activity: Activity) -> set[int]:
    """Marks the VPN puts on its own packets: WireGuard's fwmark, the mark of a
    tunnel client's sockets, and wg-quick's pattern 'not fwmark M lookup T'
    where table T sends traffic into the tunnel (readable without root)."""
    marks = set(vpn_marks(ctx.state))
    marks |= {s.mark for s in activity.sockets if s.mark and any(p.tunnel_client for p in activity.owners(s))}
    for rule in ctx.state.rules:
        if rule.invert and rule.fwmark and rule.action == "lookup":
            for route in ctx.state.routes_in([rule.table]):
                if route.is_default and any(ctx.tunnel.is_tunnel_interface(n) for n in route.ifnames):
                    marks.add(rule.fwmark)
    return marks


def is_vpn_socket(ctx: ProbeContext, sock: SocketInfo, activity: Activity) -> bool:
    """The VPN client's own traffic (to its server) is expected outside the tunnel."""
    if sock.remote and sock.remote in vpn_endpoints(ctx.state):
        return True
    if sock.mark and sock.mark in vpn_marks(ctx.state):
        return True
    return any(p.tunnel_client or p.name in VPN_CLIENTS for p in activity.owners(sock))


def _group(users: list[Bypass]) -> list[list[Bypass]]:
    """Bypassing users, grouped by what sends them around the tunnel and where."""
    groups: dict[tuple, list[Bypass]] = {}
    for entry in users:
        if not entry.leaks:
            continue
        egress = entry.egress
        why = (entry.setters[0].text if entry.setters else
               egress.rule.describe() if egress is not None and egress.rule is not None else "")
        key = (why, egress.interface if egress else None, entry.egress is None)
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def _user_name(ctx: ProbeContext, uid: int) -> str | None:
    """From the accounts in the network state (read once per run)."""
    return ctx.oracle.user_name(uid)


def _user_text(ctx: ProbeContext, uid: int) -> str:
    name = _user_name(ctx, uid)
    return f"user {name} (uid {uid})" if name else f"uid {uid} (no user account)"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _table(egress: Egress) -> str:
    from leakcheck.netstate import table_name
    return table_name(egress.rule.table) if egress.rule else "?"


def _sample_addresses(prefixes: Iterable[str]) -> list[Any]:
    out = []
    for text in list(prefixes)[:4]:
        addr = first_public_address(ipaddress.ip_network(text))
        if addr is not None:
            out.append(addr)
    return out


def _public_unexcepted(ctx: ProbeContext, remote: str | None) -> bool:
    if remote is None:
        return False
    addr = ipaddress.ip_address(remote)
    return is_public(addr) and ctx.is_allowed_direct(addr) is None


def _source(sock: SocketInfo) -> Any:
    addr = ipaddress.ip_address(sock.local)
    return None if addr.is_unspecified else addr


def _bound_fallback(ctx: ProbeContext, sock: SocketInfo, egress: Egress) -> Egress:
    dst = ipaddress.ip_address(sock.remote)
    policy = ctx.oracle.xfrm_policy_for(dst, _source(sock), 17 if sock.protocol == "udp" else 6)
    if policy is not None and policy.action == "block":
        return Egress(dst, Path.BLOCKED, interface=sock.bound_device, xfrm_policy=policy,
                      error="xfrm block policy", selectors=egress.selectors)
    if policy is not None and policy.protects:
        return Egress(dst, Path.PROTECTED, interface=sock.bound_device, xfrm_policy=policy,
                      selectors=egress.selectors)
    return Egress(dst, Path.CLEAR, interface=sock.bound_device, selectors=egress.selectors,
                  error=f"no route for the bound device ({egress.error}); sent on-link")


def _address_interface(ctx: ProbeContext, local: str) -> str | None:
    addr = ipaddress.ip_address(local)
    return next((a.ifname for a in ctx.state.addresses if a.address == addr), None)


def _owners_text(sock: SocketInfo, owners: list[ProcessInfo]) -> str:
    if owners:
        first = owners[0]
        user = f"user {first.user}" if first.user else f"uid {first.uid}"
        more = f" (and {len(owners) - 1} more)" if len(owners) > 1 else ""
        return f"Process {first.name} (pid {first.pid}, {user}){more}"
    return f"A socket of uid {sock.uid} (process not visible)"


def _socket_evidence(ctx: ProbeContext, sock: SocketInfo, activity: Activity) -> dict[str, Any]:
    return {"connection": sock.describe(), "protocol": sock.protocol, "state": sock.state,
            "local": f"{sock.local}:{sock.local_port}",
            "remote": f"{sock.remote}:{sock.remote_port}" if sock.remote else None,
            "bound_device": sock.bound_device, "socket_mark": hex(sock.mark) if sock.mark is not None else None,
            "uid": sock.uid, "user": _user_name(ctx, sock.uid) if sock.uid >= 0 else None,
            "processes": [p.evidence() for p in activity.owners(sock)]}
