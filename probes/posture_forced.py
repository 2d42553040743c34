"""Forced VPN: what if the tunnel dropped now?

The egress verdict (routes, xfrm, firewall) is asked on a copy of this run's
network state with the tunnel taken away (leakcheck/whatif.py): tunnel links
down, their routes, rules and IPsec policies gone, the firewall unchanged.
Nothing on the machine is touched. Internet traffic of both families (the
configured canaries, or built-in public destinations) must then be blocked,
by a kill switch / lockdown rule or by having no route, not sent in clear.
The evidence names the firewall rule that blocks it or the route that would
carry it.

Two more questions, answered from configuration (posture facts) as far as
the host shows them, "unknown" with the reason otherwise:
- Is the firewall loaded at boot before the network? An enabled unit that
  loads a ruleset (nftables.service, netfilter-persistent...) ordered
  Before=network-pre.target.
- Can an unprivileged user switch the VPN off? A NetworkManager VPN profile
  with no `connection.permissions` and no polkit rule for NetworkManager can
  be disconnected by any user with a local session (NetworkManager's
  default polkit policy); a system unit (wg-quick@, openvpn-client@,
  strongSwan) needs admin authentication to stop.

Findings:
- `posture-forced.no-lockdown` (warn; info with posture.require_lockdown =
  false): with the tunnel gone, traffic would leave in clear.
- `posture-forced.lockdown` (info): it would be blocked, and by what.
- `posture-forced.lockdown-not-at-boot` (warn): the unit that loads the
  firewall is enabled but not ordered before network-pre.target, or (for
  nftables.service) the table that blocks is not in /etc/nftables.conf
  and its includes.
- `posture-forced.user-can-disable` (warn): an unprivileged user can turn
  the VPN off.

Skipped when the firewall could not be read (without root): then "blocked"
could not be told from "in clear"; and where leakcheck has no posture reader
(Linux only so far: the what-if uses the Linux FIB model).
"""

from __future__ import annotations

from typing import Any

from leakcheck.errors import ProbeSkipped
from leakcheck.oracle import Egress, Path
from leakcheck.platform.posture import PostureFacts
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance
from leakcheck.whatif import egress_without_tunnel

FAMILY = {4: "IPv4", 6: "IPv6"}


class PostureForcedProbe(Probe):
    """Forced VPN: is traffic blocked, not sent in clear, if the tunnel drops now?"""

    name = "posture-forced"
    leak_class = "traffic that would leave in clear if the tunnel dropped (no kill switch / lockdown)"
    finding_ids = ("posture-forced.no-lockdown", "posture-forced.lockdown",
                   "posture-forced.lockdown-not-at-boot", "posture-forced.user-can-disable")
    checks = ("forced",)

    def run(self, ctx: ProbeContext) -> list[Finding]:
        if not ctx.posture.root:
            raise ProbeSkipped("; ".join(ctx.posture.limits))
        fw = ctx.state.firewall
        if fw is None or not fw.sources:
            why = "; ".join(fw.unreadable) if fw is not None and fw.unreadable else "not read (needs root)"
            raise ProbeSkipped(f"the firewall could not be read ({why}): a kill switch cannot be told apart "
                               "from traffic in clear")
        destinations = [d for family in (4, 6) for d in ctx.destinations(family)[0]]
        what, answers = egress_without_tunnel(ctx.state, ctx.tunnel, destinations)
        clear = [e for e in answers if e.path is Path.CLEAR]
        common = {"tunnel": {"state": ctx.tunnel.state, "kind": ctx.tunnel.kind,
                             "interfaces": list(ctx.tunnel.interfaces)},
                  "without_tunnel": what.removed, "families": _by_family(answers),
                  "at_boot": _at_boot(ctx.posture, _blocking_tables(answers)),
                  "user_can_disable": _user_can_disable(ctx.posture)}
        findings = [self._lockdown_finding(ctx, clear, answers, common)]
        boot = common["at_boot"]
        if not clear and boot["state"] == "no":
            findings.append(self.finding(
                "posture-forced.lockdown-not-at-boot", Severity.MEDIUM,
                f"The lockdown may be missing after a reboot: {boot['reason']}.",
                {"at_boot": boot}, f"Put the kill switch in the ruleset {boot['unit']} loads and order the unit "
                "Before=network-pre.target with Wants=network-pre.target, so the lockdown is in place before "
                "any interface is configured.",
                Guidance.FORCED, Effect.WARN))
        user = common["user_can_disable"]
        if user["state"] == "yes":
            findings.append(self.finding(
                "posture-forced.user-can-disable", Severity.MEDIUM,
                f"An unprivileged user can switch the VPN off: {user['reason']}.", {"user_can_disable": user},
                "Restrict the VPN profile (NetworkManager connection.permissions, or a polkit rule denying "
                "org.freedesktop.NetworkManager.network-control to non-admin users), or run the VPN as a "
                "system unit users cannot stop, and keep a kill switch so a disconnect blocks traffic.",
                Guidance.FORCED, Effect.WARN))
        return findings

    def _lockdown_finding(self, ctx: ProbeContext, clear: list[Egress], answers: list[Egress],
                          common: dict[str, Any]) -> Finding:
        when = "If the tunnel dropped now" if ctx.tunnel.up else f"With the tunnel {ctx.tunnel.state} (as now)"
        if clear:
            first = clear[0]
            families = sorted({FAMILY[e.destination.version] for e in clear})
            required = ctx.config.get("posture", "require_lockdown")
            # Not required by policy (posture.require_lockdown = false): a note, as a split
            # tunnel allowed by policy is, so it never reads as a high-severity problem.
            return self.finding(
                "posture-forced.no-lockdown", Severity.HIGH if required else Severity.INFO,
                f"{when}, {' and '.join(families)} traffic would leave in clear: "
                f"to {first.destination} {first.describe()} (route {first.route.describe() if first.route else '?'}); "
                "nothing blocks traffic outside the tunnel.",
                {**common, "first_clear": first.evidence()},
                "Add a kill switch / lockdown: a firewall rule (owned by the VPN client or loaded at boot) "
                "that drops output leaving any interface but the tunnel, except to the VPN server and the "
                "managed exceptions; or the client's 'block connections without VPN' setting.",
                Guidance.FORCED, Effect.WARN if required else Effect.INFO)
        by = sorted({_blocked_by(e) for e in answers})
        return self.finding(
            "posture-forced.lockdown", Severity.INFO,
            f"{when}, internet traffic of both families would be blocked ({'; '.join(by)}).",
            common, "Keep the lockdown in place; it is what stops traffic leaking while the VPN reconnects.",
            Guidance.FORCED, Effect.INFO)


def _blocked_by(egress: Egress) -> str:
    if egress.firewall is not None and egress.firewall.blocked:
        return egress.firewall.describe()
    if egress.xfrm_policy is not None:
        return f"xfrm policy {egress.xfrm_policy.describe()}"
    return egress.error or "no route"


def _by_family(answers: list[Egress]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for family, label in FAMILY.items():
        mine = [e for e in answers if e.destination.version == family]
        clear = [e for e in mine if e.path is Path.CLEAR]
        out[label] = {"result": "clear" if clear else "blocked",
                      "destinations": [e.evidence() for e in mine]}
    return out


def _blocking_tables(answers: list[Egress]) -> set[tuple[str, str]]:
    """(source, "family table") of the firewall rules or chain policies that block."""
    out = set()
    for egress in answers:
        if egress.firewall is None or not egress.firewall.blocked:
            continue
        for _, verdict in egress.firewall.verdicts:
            chain = verdict.chain
            if verdict.rule is not None:
                out.add((verdict.rule.source, f"{verdict.rule.family} {verdict.rule.table}"))
            elif chain is not None:
                out.add((chain.source, f"{chain.family} {chain.table}"))
    return out


def _at_boot(facts: PostureFacts, blocking: set[tuple[str, str]]) -> dict[str, Any]:
    """Is the blocking ruleset loaded before the network comes up (systemd ordering, and
    for nftables whether the boot ruleset holds the tables that block)?"""
    enabled = [u for u in facts.firewall_units if u.enabled]
    if not enabled:
        known = ", ".join(u.name for u in facts.firewall_units) or "none installed"
        return {"state": "unknown", "reason": "no enabled unit loads a firewall ruleset at boot "
                f"(firewall units: {known}); the VPN client may load its own kill switch"}
    early = [u for u in enabled if "network-pre.target" in u.before]
    if not early:
        unit = enabled[0]
        return {"state": "no", "unit": unit.name, "file": unit.path, "enabled_by": list(unit.enabled_by),
                "before": list(unit.before),
                "reason": f"{unit.name} is enabled but not ordered before network-pre.target"}
    unit = early[0]
    out: dict[str, Any] = {"unit": unit.name, "file": unit.path}
    nft = {table for source, table in blocking if source == "nftables"}
    if unit.name == "nftables.service" and nft and facts.nft_boot_tables is not None:
        missing = sorted(nft - facts.nft_boot_tables)
        out["boot_ruleset"] = facts.nft_boot_files
        if missing:
            return {**out, "state": "no", "missing_tables": missing,
                    "reason": f"the blocking table(s) {', '.join(missing)} are not in the ruleset "
                              f"{unit.name} loads ({facts.nft_boot_files[0]}): gone after a reboot"}
    return {**out, "state": "yes", "reason": f"{unit.name} is enabled and ordered Before=network-pre.target"}


def _user_can_disable(facts: PostureFacts) -> dict[str, Any]:
    """Can a user without admin rights turn the VPN off, as far as configuration shows?"""
    vpn_profiles = [p for p in facts.nm_profiles if p.is_vpn]
    if vpn_profiles:
        return _nm_user_can_disable(facts, vpn_profiles)
    units = [u for u in facts.vpn_units if u.enabled and u.name != "openvpn.service"]
    if units:
        return {"state": "no", "units": [u.name for u in units],
                "reason": "the VPN runs as an enabled system unit; stopping it needs admin authentication "
                          "(systemd's default polkit policy for manage-units)"}
    reason = "no NetworkManager VPN profile or enabled VPN unit found"
    if facts.limits:
        reason += f" (not readable: {'; '.join(facts.limits[:3])})"
    return {"state": "unknown", "reason": reason}


def _nm_user_can_disable(facts: PostureFacts, vpn_profiles: list) -> dict[str, Any]:
    """NetworkManager: deactivating a connection is the network-control action; a profile's
    connection.permissions narrows who may use it at all."""
    profiles = [p.evidence() for p in vpn_profiles]
    if facts.polkit_nm_rules:
        return {"state": "unknown", "profiles": profiles,
                "reason": f"polkit rules may decide network-control: {', '.join(facts.polkit_nm_rules)}"}
    control = facts.nm_network_control
    active = control.get("allow_active")
    if active is None:
        return {"state": "unknown", "profiles": profiles,
                "reason": "NetworkManager's polkit policy (network-control) could not be read"}
    if not active.startswith("yes"):
        return {"state": "no", "profiles": profiles, "polkit": control,
                "reason": f"network-control needs {active} for local users ({control.get('file')})"}
    open_profiles = [p for p in vpn_profiles if not p.permissions]
    first = (open_profiles or vpn_profiles)[0]
    who = ("any user with a local session" if open_profiles
           else f"the users in its connection.permissions ({first.permissions})")
    return {"state": "yes", "profiles": profiles, "polkit": control,
            "reason": f"NetworkManager profile '{first.id}' "
                      f"{'has no connection.permissions and ' if open_profiles else ''}"
                      f"{who} may disconnect it (network-control allow_active=yes in {control.get('file')})"}
