"""Does the tunnel come back by itself after a drop, how fast, and does
anything leak while it is down?

Two halves.

**Passive, always.** The tunnel's current state, the last WireGuard
handshake where the tunnel exposes one, and the outages the background
agent recorded in `tunnel-history.json` (under `[agent] state_dir`; written
from netlink link/address/route changes):

- `reconnect.tunnel-history` (info): current state, last handshake and its
  age, every recorded outage with its length (the latest ones), the longest,
  how many lasted longer than the bound, an outage still open.
- `reconnect.stale-handshake` (warn): a WireGuard tunnel that is up but has
  not completed a handshake for more than 180 s (or never). A tunnel in use
  re-keys every 2 minutes, so it is probably dead. When test packets are
  allowed, some are sent into the tunnel first: if a fresh handshake follows
  the tunnel was only idle and there is no finding; if none follows within
  6 s the finding says "observed". Without test packets it is only a note
  (info, "inferred": an idle tunnel without keepalive looks the same).
- `reconnect.no-auto-reconnect` (warn), from history: the agent saw the
  tunnel go down more than `[agent] reconnect_bound` ago, and it is still not up.

**Active, only when enabled** (`[agent] disruptive = true` or
`leakcheck run --disruptive`; privileged; test packets allowed; an interface
tunnel whose server address is known - WireGuard peers, IPsec gateways, the
servers of tun/ppp clients (the process holding the device); not
on a network-change trigger). Cuts the path to the VPN server for
`[agent] reconnect_cut` (default 10 s) with an nftables table of its own,
looks for leaks while it is down, lifts the cut and measures the time until
traffic passes through the tunnel again (see leakcheck/disrupt.py for what
"again" means and which evidence decided). The kernel lifts the cut by
itself if leakcheck dies meanwhile (an nftables table with the owner flag).

- `reconnect.leak-while-down` (leak): while the tunnel was down, test
  traffic left a physical interface in clear: no kill switch, and the client
  fell back to the direct route. The look, the route and the packet are in
  the evidence.
- `reconnect.no-auto-reconnect` (warn): not back within
  `[agent] reconnect_bound` (default 60 s) after the cut was lifted. A
  warning, not a leak: a tunnel that stays down behind a kill switch leaks
  nothing; one that leaks while it stays down also gets leak-while-down.
- `reconnect.reconnected` (info): it came back; the measured seconds, what
  decided, and what traffic did while it was down (refused by the firewall,
  held in the dead tunnel).

When the active half does not run, `reconnect.cut-test-skipped` (info)
says why, and the probe's status comes from the passive half alone.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from leakcheck.config import parse_duration
from leakcheck.oracle import Path
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance, rfc3339
from leakcheck.tunnel import vpn_endpoints

if TYPE_CHECKING:  # imported when the cut test runs: it is rarely needed
    from leakcheck.disrupt import CutOutcome, CutPlan

STALE_AFTER_S = 180  # WireGuard's REJECT_AFTER_TIME: a tunnel in use has re-keyed by then
REVIVE_WAIT_S = 6.0  # REKEY_TIMEOUT (5 s) plus a margin: a nudge brings a handshake within it
RECENT_OUTAGES = 10  # outages listed in the evidence (the file keeps up to 1000)


class ReconnectProbe(Probe):
    """Does the tunnel come back by itself after a drop, how fast, and does
    anything leak while it is down? History always; a real cut when enabled."""

    name = "reconnect"
    leak_class = "a tunnel that does not come back after a drop, or traffic that leaks while it is down"
    finding_ids = ("reconnect.leak-while-down", "reconnect.no-auto-reconnect", "reconnect.stale-handshake",
                   "reconnect.reconnected", "reconnect.tunnel-history", "reconnect.cut-test-skipped")
    checks = ("reconnect",)
    # The cut runs after every other probe; without --disruptive only the passive half runs.
    disruptive = True
    passive_half = True
    # The runner's limit: the longest cut and bound the config accepts, plus the baseline.
    timeout_s = 500.0

    def run(self, ctx: ProbeContext) -> list[Finding]:
        bound_s = parse_duration(ctx.config.get("agent", "reconnect_bound"))
        findings = self._passive(ctx, bound_s)
        findings += self._active(ctx, bound_s)
        return findings

    # ------------------------------------------------------------ passive half

    def _passive(self, ctx: ProbeContext, bound_s: float) -> list[Finding]:
        now = ctx.control.wall()
        path, history = ctx.control.history(ctx.config.get("agent", "state_dir"))
        handshakes = self._handshakes(ctx, now)
        findings = [self._history_finding(ctx, bound_s, path, history, handshakes)]
        findings += self._stale(ctx, handshakes)
        open_outage = self._open_outage(ctx, history, now, bound_s)
        if open_outage is not None:
            findings.append(open_outage)
        return findings

    def _handshakes(self, ctx: ProbeContext, now: float) -> dict[str, dict[str, Any]]:
        out = {}
        for wg in ctx.state.wireguard:
            if not ctx.tunnel.is_tunnel_interface(wg.ifname):
                continue
            if wg.latest_handshake:
                out[wg.ifname] = {"at": rfc3339(datetime.fromtimestamp(wg.latest_handshake, timezone.utc)),
                                  "age_s": max(0, int(now - wg.latest_handshake))}
            else:
                out[wg.ifname] = {"at": None, "age_s": None}
        return out

    def _history_finding(self, ctx: ProbeContext, bound_s: float, path: FsPath,
                         history: list[dict[str, Any]], handshakes: dict[str, dict[str, Any]]) -> Finding:
        tunnel = ctx.tunnel
        closed = [e for e in history if e.get("up_at") and isinstance(e.get("outage_s"), (int, float))]
        still_open = [e for e in history if not e.get("up_at")]
        longest = max(closed, key=lambda e: e["outage_s"], default=None)
        evidence: dict[str, Any] = {
            "tunnel_state": tunnel.state, "tunnel_kind": tunnel.kind, "interfaces": list(tunnel.interfaces),
            "latest_handshake": handshakes, "history_file": str(path), "outages_recorded": len(history),
            "recent_outages": history[-RECENT_OUTAGES:],
            "longest_outage_s": longest["outage_s"] if longest else None,
            "outages_over_bound": sum(1 for e in closed if e["outage_s"] > bound_s), "bound_s": bound_s,
            "open_outage": still_open[-1] if still_open else None,
        }
        what = ", ".join((tunnel.kind, *tunnel.interfaces))
        parts = [f"The tunnel ({what}) is {tunnel.state}." if tunnel.state != "absent" else "There is no VPN tunnel."]
        for name, shake in handshakes.items():
            parts.append(f"Last WireGuard handshake on {name}: "
                         + (f"{shake['age_s']} s ago." if shake["age_s"] is not None else "never."))
        if history:
            text = f"The agent recorded {len(history)} outage{'s' if len(history) != 1 else ''}"
            if longest:
                text += f"; the longest lasted {longest['outage_s']:g} s"
            if evidence["outages_over_bound"]:
                text += f", {evidence['outages_over_bound']} longer than {bound_s:g} s"
            parts.append(text + ".")
            if still_open:
                parts.append(f"An outage of {still_open[-1].get('interface')} that began "
                             f"{still_open[-1].get('down_at')} has no recorded end.")
        else:
            parts.append("No outage recorded by the agent.")
        return self.finding("reconnect.tunnel-history", Severity.INFO, " ".join(parts), evidence, "",
                            Guidance.RECONNECT, Effect.INFO)

    def _stale(self, ctx: ProbeContext, handshakes: dict[str, dict[str, Any]]) -> list[Finding]:
        findings = []
        for name, shake in handshakes.items():
            link = ctx.state.link(name)
            if link is None or not link.usable:
                continue
            if shake["age_s"] is not None and shake["age_s"] <= STALE_AFTER_S:
                continue
            revived = self._revive(ctx, name)
            if revived:
                continue  # only idle: a test packet brought a fresh handshake
            observed = revived is False
            age = f"{shake['age_s']} s ago" if shake["age_s"] is not None else "never"
            summary = (f"The WireGuard tunnel {name} is up but its last handshake was {age}: a tunnel in use "
                       f"re-keys every 2 minutes, so its server is probably unreachable and traffic goes nowhere.")
            if observed:
                summary += f" Test packets sent into it brought no handshake within {REVIVE_WAIT_S:g} s."
            else:
                summary += " (Not confirmed with test packets: an idle tunnel without keepalive looks the same.)"
            evidence = {"interface": name, "latest_handshake": shake["at"], "age_s": shake["age_s"],
                        "stale_after_s": STALE_AFTER_S, "method": "observed" if observed else "inferred"}
            findings.append(self.finding(
                "reconnect.stale-handshake", Severity.MEDIUM if observed else Severity.LOW, summary, evidence,
                "Check the VPN server is reachable (endpoint address, UDP port, firewall); set PersistentKeepalive "
                "and let the client restart the tunnel when handshakes stop.", Guidance.RECONNECT,
                Effect.WARN if observed else Effect.INFO))
        return findings

    def _revive(self, ctx: ProbeContext, name: str) -> bool | None:
        """Send test packets into the tunnel; True if a fresh handshake follows,
        False if none within REVIVE_WAIT_S, None if test packets cannot be sent."""
        if not ctx.is_root or ctx.active_unavailable():
            return None
        from leakcheck import disrupt

        targets = self._protected_canaries(ctx, (name,))
        if not targets:
            return None
        control = ctx.control
        before = control.pulse((name,), (name,))
        deadline = control.monotonic() + REVIVE_WAIT_S
        while control.monotonic() < deadline:
            disrupt.nudge_tunnel(ctx, targets, (name,))
            control.sleep(disrupt.NUDGE_EVERY_S)
            pulse = control.pulse((name,), (name,))
            if pulse.handshake and (before.handshake is None or pulse.handshake > before.handshake):
                return True
        return False

    def _open_outage(self, ctx: ProbeContext, history: list[dict[str, Any]], now: float,
                     bound_s: float) -> Finding | None:
        if ctx.tunnel.up:
            return None
        for entry in reversed(history):
            if entry.get("up_at"):
                continue
            began = _parse_time(entry.get("down_at"))
            if began is None or now - began <= bound_s:
                continue
            down_s = round(now - began, 1)
            summary = (f"The agent saw the tunnel {entry.get('interface')} go down at {entry.get('down_at')} "
                       f"and it has not come back since ({down_s:g} s, longer than the {bound_s:g} s bound).")
            evidence = {"method": "history", "interface": entry.get("interface"), "down_at": entry.get("down_at"),
                        "down_for_s": down_s, "bound_s": bound_s, "tunnel_state": ctx.tunnel.state}
            return self.finding("reconnect.no-auto-reconnect", Severity.HIGH, summary, evidence,
                                _RECONNECT_FIX, Guidance.RECONNECT, Effect.WARN)
        return None

    # ------------------------------------------------------------ active half

    def _active(self, ctx: ProbeContext, bound_s: float) -> list[Finding]:
        from leakcheck import disrupt

        plan_or_reason = self._plan(ctx, bound_s)
        if isinstance(plan_or_reason, str):
            return [self._skipped(plan_or_reason)]
        try:
            outcome = disrupt.cut_test(ctx, plan_or_reason)
        except (disrupt.CannotMeasure, disrupt.CutBusy) as exc:
            return [self._skipped(str(exc))]
        return self._judge(outcome)

    def _skipped(self, reason: str) -> Finding:
        return self.finding("reconnect.cut-test-skipped", Severity.INFO,
                            f"The disruptive reconnect test did not run: {reason}.", {"reason": reason},
                            "", Guidance.RECONNECT, Effect.INFO)

    def _plan(self, ctx: ProbeContext, bound_s: float) -> "CutPlan | str":
        """A CutPlan, or the reason the cut cannot (or must not) run here."""
        from leakcheck.disrupt import CutPlan

        if not ctx.disruptive:
            return "disruptive test not enabled (agent.disruptive = true or --disruptive)"
        if ctx.trigger == "network-change":
            return ("not run on a network-change trigger (it would measure the change, and the client's "
                    "reaction to the cut would trigger the next run)")
        if not ctx.is_root:
            return "not privileged (the cut needs CAP_NET_ADMIN, test packets CAP_NET_RAW)"
        why_not = ctx.active_unavailable()
        if why_not:
            return why_not
        if not ctx.tunnel.up:
            return "no tunnel is up to cut"
        if not ctx.tunnel.interfaces:
            return "policy-based IPsec has no tunnel interface to watch; the cut test needs an interface tunnel"
        endpoints = self._endpoints(ctx)
        if not endpoints:
            return ("the VPN server's address is not known (WireGuard peers, IPsec gateways and the sockets of "
                    "the process holding a tun/ppp device showed none), so there is nothing to cut")
        canaries = self._protected_canaries(ctx, ctx.tunnel.interfaces)
        if not canaries:
            return "no canary destination goes into the tunnel (a split tunnel?): nothing to measure"
        wireguard = tuple(w.ifname for w in ctx.state.wireguard if ctx.tunnel.is_tunnel_interface(w.ifname))
        return CutPlan(endpoints=tuple(sorted(endpoints)), canaries=tuple(canaries),
                       tunnel_names=tuple(ctx.tunnel.interfaces), wireguard_names=wireguard,
                       cut_s=parse_duration(ctx.config.get("agent", "reconnect_cut")), bound_s=bound_s)

    @staticmethod
    def _endpoints(ctx: ProbeContext) -> set[str]:
        return vpn_endpoints(ctx.state, ctx.tunnel)

    @staticmethod
    def _protected_canaries(ctx: ProbeContext, interfaces: tuple[str, ...]) -> list[str]:
        """Canaries the kernel sends into these tunnel interfaces now."""
        targets = [*ctx.config.get("canaries", "ipv4"), *ctx.config.get("canaries", "ipv6")]
        egresses = ctx.oracle.egress_many([ctx.oracle.query(t) for t in targets])
        return [str(e.destination) for e in egresses if e.path is Path.TUNNEL and e.interface in interfaces]

    # ------------------------------------------------------------ judging the cut

    def _judge(self, outcome: "CutOutcome") -> list[Finding]:
        from leakcheck import disrupt

        plan = outcome.plan
        common = {"endpoints": list(plan.endpoints), "canaries": list(plan.canaries), "cut_s": plan.cut_s,
                  "held_s": round(outcome.held_s, 2), "bound_s": plan.bound_s, "baseline": outcome.baseline,
                  "looks": disrupt.summarize(outcome.looks), "cut_safety": outcome.safety,
                  "removed_leftover_table": outcome.removed_leftover}
        if outcome.lift_error:
            common["lift_error"] = outcome.lift_error
        findings = []
        if outcome.leak_looks:
            findings.append(self._leak_finding(outcome, common))
        if outcome.back:
            findings.append(self._back_finding(outcome, common))
        else:
            findings.append(self._not_back_finding(outcome, common))
        return findings

    def _leak_finding(self, outcome: "CutOutcome", common: dict[str, Any]) -> Finding:
        first = outcome.leak_looks[0]
        canary = first.leaking[0]
        observed = next((c for lk in outcome.leak_looks for c in lk.leaking if c.method == "observed"), None)
        shown = observed or canary
        when = (f"{first.at_s:.1f} s into a {outcome.plan.cut_s:g} s cut" if first.phase == "cut"
                else f"{outcome.plan.bound_s:g} s after the cut was lifted, the tunnel still down")
        summary = (f"While the path to the VPN server ({', '.join(outcome.plan.endpoints)}) was cut, traffic to "
                   f"{shown.egress.destination} went {shown.egress.describe()} ({when}): nothing blocks traffic "
                   f"while the tunnel is down (no kill switch) and the VPN client falls back to the direct route.")
        if observed is not None and observed.observation is not None:
            summary += f" Observed: a test packet left {', '.join(observed.observation.clear_on)} in clear."
        evidence = {"method": "observed" if observed else "inferred", "first_leak_at_s": round(first.at_s, 2),
                    "phase": first.phase, "destinations": sorted({str(c.egress.destination) for lk in
                                                                  outcome.leak_looks for c in lk.leaking}),
                    **shown.evidence(), **common}
        return self.finding("reconnect.leak-while-down", Severity.CRITICAL, summary, evidence,
                            "Turn on the VPN client's kill switch (always-on VPN, 'block connections without VPN'): "
                            "a firewall that drops everything except the tunnel and the VPN server, kept in place "
                            "while the client reconnects.", Guidance.FULL_TUNNEL, Effect.LEAK)

    def _back_finding(self, outcome: "CutOutcome", common: dict[str, Any]) -> Finding:
        decided = {"wireguard-handshake": "a WireGuard handshake completed after the cut",
                   "reply-through-tunnel": "replies to test packets came back through the tunnel"}
        summary = (f"The tunnel passed traffic again {outcome.back_s:.1f} s after a {outcome.plan.cut_s:g} s cut of "
                   f"the path to the VPN server ({decided.get(outcome.decided_by, outcome.decided_by)}, with the "
                   f"test destinations routed into it).")
        down = _while_down(outcome)
        if down:
            summary += f" While it was down, {down}."
        evidence = {"reconnect_s": round(outcome.back_s, 2), "decided_by": outcome.decided_by,
                    **outcome.back_detail, **common}
        return self.finding("reconnect.reconnected", Severity.INFO, summary, evidence, "", Guidance.RECONNECT,
                            Effect.INFO)

    def _not_back_finding(self, outcome: "CutOutcome", common: dict[str, Any]) -> Finding:
        plan = outcome.plan
        routes = outcome.final_routes
        where = "; ".join(f"{dst} goes to {name or 'no interface'}" for dst, name in routes.items())
        present = outcome.back_detail.get("tunnel_interfaces_present", [])
        state = (f"{', '.join(present)} still exists" if present else
                 f"{', '.join(plan.tunnel_names)} is gone")
        summary = (f"After a {plan.cut_s:g} s cut of the path to the VPN server ({', '.join(plan.endpoints)}), "
                   f"the tunnel did not pass traffic again within {plan.bound_s:g} s: {state}; {where}.")
        evidence = {"waited_s": plan.bound_s, "final_routes": routes, **outcome.back_detail, **common}
        return self.finding("reconnect.no-auto-reconnect", Severity.HIGH, summary, evidence, _RECONNECT_FIX,
                            Guidance.RECONNECT, Effect.WARN)


_RECONNECT_FIX = ("Make the VPN connect automatically and reconnect after loss (always-on VPN / auto-reconnect; "
                  "for WireGuard a PersistentKeepalive and a supervisor that restores the tunnel), keeping the "
                  "kill switch in place meanwhile.")


WHILE_DOWN = {"into-dead-tunnel": "held in the dead tunnel",
              "blocked-by-firewall": "refused by the firewall (a kill switch)",
              "no-route": "dropped for want of a route",
              "clear": "sent out in clear (see reconnect.leak-while-down)"}


def _while_down(outcome: "CutOutcome") -> str:
    """What test packets met while the tunnel was down, in the order it happened."""
    seen: list[str] = []
    for lk in outcome.looks:
        for canary in lk.canaries:
            if canary.outcome in WHILE_DOWN and canary.outcome not in seen:
                seen.append(canary.outcome)
    return "test packets were " + ", then ".join(WHILE_DOWN[o] for o in seen) if seen else ""


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
