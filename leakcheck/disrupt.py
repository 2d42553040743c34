"""The reconnect probe's disruptive test: cut the path to the VPN server,
look for leaks while the tunnel is down, lift the cut, and measure how long
until traffic passes through the tunnel again.

Timeline of `cut_test`:

1. Baseline: the tunnel must visibly carry traffic *before* the cut, or a
   reconnect time means nothing. Nudges (below) go in; a reply on the
   tunnel interface or a fresh WireGuard handshake must come back.
2. Cut (leakcheck.linux.nftcut): every packet to and from the server's
   addresses is dropped, for `cut_s` seconds. Meanwhile, repeated looks at
   the canaries that went into the tunnel before: a fresh read of the
   network state, the kernel's route decision for each, and a marked test
   packet captured on every interface. Clear packets are a leak; a send the
   firewall refuses is a kill switch at work; a packet routed into the dead
   tunnel goes nowhere (held, not leaked).
3. Lift, then poll (every POLL_S) until `bound_s`: the tunnel is back when
   **both** hold:
   - routed: every canary the tunnel carried before goes into a tunnel
     interface again (kernel route lookup): a tunnel that is up but no
     longer routed protects nothing;
   - answered: something came back from the far side after the lift: a
     WireGuard handshake completed after the cut began (none can complete
     during the cut, both directions are dropped) - "wireguard-handshake",
     or the tunnel interface received packets after the lift, i.e. replies
     to the nudges - "reply-through-tunnel".
   The measured time is from the lift to the first poll that saw both, to
   within POLL_S.
4. Not back by the bound: one last look (is traffic in clear now?).

Nudges are sent only to canaries the kernel routes into the tunnel: a UDP
datagram with TTL 1 (the tunnel's far end answers "time exceeded" through
the tunnel) and an ICMP echo with the usual small TTL. Nothing is sent in
clear on purpose.

Everything live goes through one service, `ctx.control` (`Control`): the
tunnel's counters (pulses), nudges, the cut, a fresh read of the routing
state and an oracle over it (route questions are the oracle's), the clock
and sleeps, the agent's tunnel history. The platform's own (`LiveControl`)
is the default; tests inject a scripted one, and nothing here reads the OS
itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from leakcheck.active import DEFAULT_TTL, Observation, blocked_by_firewall, confirm
from leakcheck.active import Probe as ActivePacket
from leakcheck.netstate import NetState
from leakcheck.oracle import Egress, Oracle, Path
from leakcheck.tunnel import Tunnel

if TYPE_CHECKING:
    from leakcheck.probe import ProbeContext

log = logging.getLogger(__name__)

POLL_S = 0.1
NUDGE_EVERY_S = 0.5  # also how often the routes are asked while waiting: a fresh read each time
LOOK_EVERY_S = 0.5  # leak looks during the cut: often enough to catch a client's fallback, cheap enough
NUDGE_PORT = 33434  # the traceroute port: a datagram nobody listens for
# Long enough for WireGuard's passive keepalive (10 s) when the far end ignores ICMP.
BASELINE_WAIT_S = 12.0


class CannotMeasure(Exception):
    """The test cannot give a meaningful answer here; the message says why."""


class CutError(RuntimeError):
    """The cut could not be put in place (no nftables, no privilege...)."""


class CutBusy(CutError):
    """Another live process holds the cut: a cut is already in progress."""


# ---------------------------------------------------------------- live tunnel counters

@dataclass(frozen=True)
class Pulse:
    """Live counters of the tunnel interfaces at one moment."""

    rx: dict[str, tuple[int, int]]  # name -> (ifindex, packets received)
    handshake: int | None  # newest WireGuard handshake (unix seconds) over the interfaces

    @property
    def present(self) -> list[str]:
        return sorted(self.rx)


def received_since(before: Pulse, now: Pulse) -> list[str]:
    """Tunnel interfaces that received packets between the two pulses. An
    interface re-created in between (new ifindex) counts from zero."""
    out = []
    for name, (index, packets) in sorted(now.rx.items()):
        old = before.rx.get(name)
        base = old[1] if old is not None and old[0] == index else 0
        if packets > base:
            out.append(name)
    return out


# ---------------------------------------------------------------- the service probes are given

class CutHandle(Protocol):
    """A cut in place (leakcheck/linux/nftcut.py's Cut). `lift()` ends it."""

    started: float  # the control's monotonic clock when the drop rules went in
    started_wall: float  # unix time at the same moment
    lifted_at: float | None
    lift_error: str | None
    removed_leftover: bool

    @property
    def safety(self) -> str: ...

    def lift(self) -> None: ...


class Control(Protocol):
    """What a probe may do to the live machine, and read of it beyond the run's
    snapshot: `ctx.control`. Injected like the oracle, so tests script it."""

    def pulse(self, names: Sequence[str], wireguard_names: Sequence[str] = ()) -> Pulse:
        """Packets received on each tunnel interface now, and WireGuard's newest handshake."""

    def nudge(self, targets: Sequence[str]) -> None:
        """Send packets whose answers come back through the tunnel (see the module docstring)."""

    def read_state(self) -> NetState:
        """The routing part of the network state (links, addresses, routes, rules, xfrm,
        WireGuard), read again now."""

    def oracle(self, state: NetState, tunnel: Tunnel) -> Oracle:
        """An oracle over a fresh state (closed by the caller)."""

    def cut(self, addresses: Sequence[str], seconds: float) -> CutHandle:
        """Drop everything to and from `addresses` for `seconds`; lifted by the kernel if we die.
        CutBusy when another run is cutting, CutError when it cannot be done."""

    def history(self, state_dir: str) -> tuple[FsPath, list[dict[str, Any]]]:
        """The agent's tunnel-history.json under `state_dir`: its path and well-formed entries."""

    def sleep(self, seconds: float) -> None: ...

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class LiveControl:
    """The platform's own control: the platform parts (counters, state, cut) from
    leakcheck/linux/control.py on Linux, the rest platform-neutral."""

    def __init__(self) -> None:
        self._platform: Any = None

    def _live(self) -> Any:
        if self._platform is None:
            if not sys.platform.startswith("linux"):
                raise CannotMeasure(f"live tunnel counters and the cut are not available on {sys.platform}")
            from leakcheck.linux import control
            self._platform = control
        return self._platform

    def pulse(self, names: Sequence[str], wireguard_names: Sequence[str] = ()) -> Pulse:
        return self._live().read_pulse(names, wireguard_names)

    def nudge(self, targets: Sequence[str]) -> None:
        from leakcheck.active import send_packet

        for target in targets:
            for packet in (ActivePacket("udp", target, NUDGE_PORT, ttl=1),
                           ActivePacket("icmp", target, ttl=DEFAULT_TTL)):
                try:
                    send_packet(packet)
                except OSError:
                    pass  # refused (a kill switch) or no route: the counters tell what matters

    def read_state(self) -> NetState:
        return self._live().read_routing_state()

    def oracle(self, state: NetState, tunnel: Tunnel) -> Oracle:
        return Oracle(state, tunnel)

    def cut(self, addresses: Sequence[str], seconds: float) -> CutHandle:
        return self._live().cut(addresses, seconds)

    def history(self, state_dir: str) -> tuple[FsPath, list[dict[str, Any]]]:
        from leakcheck.agent.state import Paths, TunnelHistory

        paths = Paths(FsPath(state_dir))
        entries = [e for e in TunnelHistory(paths).read()
                   if isinstance(e, dict) and isinstance(e.get("down_at"), str)]
        return paths.history, entries

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


# ---------------------------------------------------------------- routes and nudges

def routed_into(view: "ProbeContext", targets: Sequence[str]) -> dict[str, str | None]:
    """The interface the kernel sends each target to now (None: no route), asked of
    the view's oracle."""
    egresses = view.oracle.egress_many([view.oracle.query(t) for t in targets])
    return {target: (e.interface if e.path is not Path.BLOCKED else None) for target, e in zip(targets, egresses)}


def routes_now(ctx: "ProbeContext", targets: Sequence[str]) -> dict[str, str | None]:
    """routed_into over a fresh read of the state (the run's snapshot predates the cut)."""
    with fresh_view(ctx) as view:
        return routed_into(view, targets)


def nudge_tunnel(ctx: "ProbeContext", targets: Sequence[str], tunnel_names: Sequence[str]) -> dict[str, str | None]:
    """Nudge the targets the kernel routes into the tunnel now (never one in clear);
    returns the routes it saw."""
    routes = routes_now(ctx, targets)
    ctx.control.nudge([t for t, name in routes.items() if name in tunnel_names])
    return routes

# ---------------------------------------------------------------- looking for leaks while down

@dataclass
class CanaryLook:
    egress: Egress
    observation: Observation | None
    leaks: bool
    method: str  # observed | inferred

    @property
    def outcome(self) -> str:
        """clear | blocked-by-firewall | into-dead-tunnel | no-route | not-seen"""
        obs = self.observation
        if self.leaks:
            return "clear"
        if obs is not None and blocked_by_firewall(obs):
            return "blocked-by-firewall"
        if self.egress.path is Path.TUNNEL or (obs is not None and obs.outcome == "tunnel"):
            return "into-dead-tunnel"
        if self.egress.path is Path.BLOCKED:
            return "no-route"
        return obs.outcome if obs is not None else self.egress.path.value

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": str(self.egress.destination), "outcome": self.outcome,
                               "method": self.method, "path": self.egress.path.value,
                               "interface": self.egress.interface}
        if self.egress.route is not None:
            out["route"] = self.egress.route.describe()
        if self.observation is not None:
            out["observed"] = self.observation.evidence()
        return out


@dataclass
class Look:
    """One look at the protected canaries while the tunnel was down."""

    at_s: float  # seconds since the cut began
    phase: str  # "cut" (cut in place) | "after-bound" (lifted, still not back at the bound)
    tunnel_state: str
    canaries: list[CanaryLook]
    note: str | None = None  # why the test packets could not be captured (inference only)

    @property
    def leaking(self) -> list[CanaryLook]:
        return [c for c in self.canaries if c.leaks]

    def key(self) -> tuple:
        return (self.phase, self.tunnel_state, tuple((str(c.egress.destination), c.outcome, c.method)
                                                     for c in self.canaries))


def summarize(looks: Sequence[Look]) -> list[dict[str, Any]]:
    """Evidence: runs of consecutive looks that saw the same thing, as spans."""
    spans: list[dict[str, Any]] = []
    previous = None
    for lk in looks:
        if spans and lk.key() == previous:
            spans[-1]["to_s"] = round(lk.at_s, 2)
            spans[-1]["looks"] += 1
        else:
            spans.append({"from_s": round(lk.at_s, 2), "to_s": round(lk.at_s, 2), "looks": 1,
                          "phase": lk.phase, "tunnel_state": lk.tunnel_state,
                          "outcomes": {str(c.egress.destination): c.outcome for c in lk.canaries},
                          "methods": sorted({c.method for c in lk.canaries})})
        if lk.note:
            spans[-1]["note"] = lk.note
        previous = lk.key()
    return spans


@contextlib.contextmanager
def fresh_view(ctx: "ProbeContext") -> Iterator["ProbeContext"]:
    """The probe context over a fresh read of the network state: the snapshot
    of the run predates the cut. The interfaces that were the tunnel stay
    watched even if detection no longer finds them."""
    from leakcheck import tunnel as tunnel_detection

    for attempt in range(3):
        try:
            state = ctx.control.read_state()
            break
        except Exception:  # a dump interrupted by the very changes we watch (a client tearing down)
            if attempt == 2:
                raise
            ctx.control.sleep(0.05)
    found = tunnel_detection.detect(state, ctx.config)
    names = tuple(dict.fromkeys(ctx.tunnel.interfaces + found.interfaces))
    view_tunnel = Tunnel(state=found.state, kind=found.kind if found.interfaces else ctx.tunnel.kind,
                         interfaces=names, policy_ipsec=found.policy_ipsec)
    oracle = ctx.control.oracle(state, view_tunnel)
    try:
        yield dataclasses.replace(ctx, state=state, tunnel=view_tunnel, oracle=oracle)
    finally:
        oracle.close()


def look(ctx: "ProbeContext", canaries: Sequence[str], since: float, phase: str) -> Look:
    with fresh_view(ctx) as view:
        # the state of the tunnel as detection sees it now, not the names we keep watching
        state = "up" if any((l := view.state.link(n)) and l.usable for n in ctx.tunnel.interfaces) else "down"
        egresses = view.oracle.egress_many([view.oracle.query(c) for c in canaries])
        note = None
        try:
            observations = view.observe([ActivePacket("udp", c, NUDGE_PORT) for c in canaries])
        except Exception as exc:  # an interface vanished under the sniffer (a client tearing down)
            observations, note = None, f"capture failed ({exc}); judged from routes"
    egresses = _route_taken(ctx, egresses, observations)
    out = []
    for i, egress in enumerate(egresses):
        obs = observations[i] if observations else None
        leaks, method = confirm(egress.outside_tunnel, obs)
        if obs is not None and obs.outcome == "tunnel":
            method = "observed"  # seen going into the tunnel interface, not out in clear
        if leaks and ctx.is_allowed_direct(egress.destination):
            leaks = False  # a managed exception is not a leak, cut or not
        out.append(CanaryLook(egress, obs, leaks, method))
    return Look(at_s=ctx.control.monotonic() - since, phase=phase, tunnel_state=state, canaries=out, note=note)


def _route_taken(ctx: "ProbeContext", egresses: list[Egress],
                 observations: "list[Observation] | None") -> list[Egress]:
    """A packet seen in clear although the route asked just before said otherwise:
    the client changed the routes in between (it is tearing down). Ask again, so
    the evidence names the route the packet took, not the one it no longer had."""
    stale = [i for i, e in enumerate(egresses)
             if observations and observations[i].clear_on and not e.outside_tunnel]
    if not stale:
        return egresses
    with fresh_view(ctx) as view:
        again = view.oracle.egress_many([view.oracle.query(egresses[i].destination) for i in stale])
    out = list(egresses)
    for i, egress in zip(stale, again):
        if egress.outside_tunnel:
            out[i] = egress
    return out


# ---------------------------------------------------------------- the test

@dataclass
class CutPlan:
    endpoints: tuple[str, ...]  # VPN server addresses to cut
    canaries: tuple[str, ...]  # destinations the tunnel carried before the cut
    tunnel_names: tuple[str, ...]
    wireguard_names: tuple[str, ...]
    cut_s: float
    bound_s: float


@dataclass
class CutOutcome:
    plan: CutPlan
    baseline: str  # what showed the tunnel carrying traffic before the cut
    held_s: float = 0.0  # how long the cut was really in place
    safety: str = ""
    removed_leftover: bool = False
    lift_error: str | None = None
    looks: list[Look] = field(default_factory=list)
    back_s: float | None = None
    decided_by: str | None = None  # wireguard-handshake | reply-through-tunnel
    back_detail: dict[str, Any] = field(default_factory=dict)
    final_routes: dict[str, str | None] = field(default_factory=dict)

    @property
    def back(self) -> bool:
        return self.back_s is not None

    @property
    def leak_looks(self) -> list[Look]:
        return [lk for lk in self.looks if lk.leaking]


def baseline(ctx: "ProbeContext", plan: CutPlan, wait_s: float = BASELINE_WAIT_S) -> str:
    """Show the tunnel answering before the cut; CannotMeasure if it does not."""
    control = ctx.control
    before = control.pulse(plan.tunnel_names, plan.wireguard_names)
    deadline = control.monotonic() + wait_s
    next_nudge = 0.0
    while True:
        now = control.monotonic()
        if now >= next_nudge:
            nudge_tunnel(ctx, plan.canaries, plan.tunnel_names)
            next_nudge = now + NUDGE_EVERY_S
        control.sleep(POLL_S)
        pulse = control.pulse(plan.tunnel_names, plan.wireguard_names)
        got = received_since(before, pulse)
        if got:
            return f"packets received on {', '.join(got)} in reply to test packets"
        if pulse.handshake and (before.handshake is None or pulse.handshake > before.handshake):
            return "a fresh WireGuard handshake"
        if control.monotonic() >= deadline:
            raise CannotMeasure(f"the tunnel showed no reply to test packets within {wait_s:g} s before the "
                                "cut (its far end may not answer them): a reconnect time could not be told")


def cut_test(ctx: "ProbeContext", plan: CutPlan) -> CutOutcome:
    """Run the whole test (module docstring). The cut is always lifted before
    this returns or raises; the kernel lifts it by itself if the process dies."""
    control = ctx.control
    outcome = CutOutcome(plan=plan, baseline=baseline(ctx, plan))
    cut = control.cut(plan.endpoints, plan.cut_s)
    outcome.safety, outcome.removed_leftover = cut.safety, cut.removed_leftover
    try:
        _watch_cut(ctx, plan, cut.started, outcome)
        # Nothing comes back from the server during the cut: this is the base for "received after".
        before_lift = control.pulse(plan.tunnel_names, plan.wireguard_names)
    finally:
        cut.lift()
    lifted = cut.lifted_at if cut.lifted_at is not None else control.monotonic()
    outcome.held_s = lifted - cut.started
    outcome.lift_error = cut.lift_error
    _wait_back(ctx, plan, cut.started_wall, lifted, before_lift, outcome)
    if not outcome.back:
        outcome.looks.append(look(ctx, plan.canaries, cut.started, "after-bound"))
    return outcome


def _watch_cut(ctx: "ProbeContext", plan: CutPlan, started: float, outcome: CutOutcome) -> None:
    """Look for leaks again and again until the cut's time is up (at least once)."""
    control = ctx.control
    end = started + plan.cut_s
    cost = 0.0
    while not outcome.looks or control.monotonic() + cost < end:
        begun = control.monotonic()
        outcome.looks.append(look(ctx, plan.canaries, started, "cut"))
        cost = control.monotonic() - begun
        control.sleep(min(LOOK_EVERY_S - cost, end - control.monotonic() - cost))
    control.sleep(end - control.monotonic())


def _wait_back(ctx: "ProbeContext", plan: CutPlan, cut_wall: float, lifted: float, before: Pulse,
               outcome: CutOutcome) -> None:
    """Poll the counters every POLL_S; ask the routes (a fresh read) every NUDGE_EVERY_S
    and as soon as the far end answered: back needs both (module docstring)."""
    control = ctx.control
    deadline = lifted + plan.bound_s
    next_routes = 0.0
    routes: dict[str, str | None] = {}
    routed = False
    while True:
        if control.monotonic() >= next_routes:
            routes = routes_now(ctx, plan.canaries)
            routed = all(routes[c] in plan.tunnel_names for c in plan.canaries)
            if routed:
                control.nudge(plan.canaries)
            next_routes = control.monotonic() + NUDGE_EVERY_S
        control.sleep(POLL_S)
        pulse = control.pulse(plan.tunnel_names, plan.wireguard_names)
        handshake_after = pulse.handshake is not None and pulse.handshake > cut_wall
        received = received_since(before, pulse)
        if (handshake_after or received) and not routed:
            routes = routes_now(ctx, plan.canaries)  # answered: are the routes back too?
            routed = all(routes[c] in plan.tunnel_names for c in plan.canaries)
        if routed and (handshake_after or received):
            outcome.back_s = control.monotonic() - lifted
            outcome.decided_by = "wireguard-handshake" if handshake_after else "reply-through-tunnel"
            outcome.back_detail = {"routes": dict(routes), "received_on": received}
            if handshake_after:
                outcome.back_detail["handshake_at"] = pulse.handshake
            break
        if control.monotonic() >= deadline:
            outcome.back_detail = {"tunnel_interfaces_present": pulse.present, "received_on": received,
                                   "handshake_after_cut": handshake_after}
            break
    outcome.final_routes = routes
