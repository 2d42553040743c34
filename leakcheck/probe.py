"""The probe contract: what a probe declares and what it is given.

A probe is a small class in its own module under `probes/`:

    class DnsProbe(Probe):
        \"\"\"Docstring: the probe's manual, shown by `leakcheck probes`.\"\"\"
        name = "dns"
        leak_class = "DNS queries reaching a resolver outside the tunnel"
        finding_ids = ("dns.resolver-outside-tunnel",)

        def run(self, ctx: ProbeContext) -> list[Finding]: ...

It reads the shared `ctx.state` / `ctx.oracle` (never the OS directly; what
is live - counters, nudges, cuts, sleeps - goes through `ctx.control`),
returns findings, or raises `ProbeSkipped(reason)` when it cannot run here.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from leakcheck.config import Config
from leakcheck.errors import ProbeSkipped
from leakcheck.netstate import IPNetwork, NetState
from leakcheck.oracle import Oracle
from leakcheck.report import RECOMMENDATIONS, Effect, Finding, Severity
from leakcheck.tunnel import Tunnel

if TYPE_CHECKING:
    from typing import Callable

    from leakcheck.active import Observation
    from leakcheck.active import Probe as ActivePacket
    from leakcheck.disrupt import Control
    from leakcheck.vpnclients import Clients
    from leakcheck.platform.posture import PostureFacts

log = logging.getLogger(__name__)
PROBE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
# Destinations that stand in for the internet when `canaries.ipv4` / `canaries.ipv6` list
# none, so what is looked at never depends on the canary list: well-known public
# resolvers of both families (Cloudflare, Google, Quad9), run as anycast worldwide.
# They are only asked of the kernel and the firewall; test packets go to configured
# canaries only.
BUILTIN_DESTINATIONS: dict[int, tuple[str, ...]] = {
    4: ("1.1.1.1", "8.8.8.8", "9.9.9.9"),
    6: ("2606:4700:4700::1111", "2001:4860:4860::8888", "2620:fe::fe"),
}

__all__ = ["Probe", "ProbeContext", "ProbeSkipped", "Finding", "Severity", "Effect", "validate_probe"]


def _live_clients() -> "Clients":
    from leakcheck.vpnclients import live  # nothing is read until a posture probe asks
    return live()


def _live_control() -> "Control":
    from leakcheck.disrupt import LiveControl  # cheap: nothing live is touched until asked
    return LiveControl()


@dataclass
class ProbeContext:
    """Everything a probe may use. Built once per run, shared by all probes."""

    config: Config
    state: NetState
    tunnel: Tunnel
    oracle: Oracle
    is_root: bool  # has CAP_NET_ADMIN + CAP_NET_RAW (root or the agent's capability set)
    disruptive: bool = False
    trigger: str = "manual"
    active: bool = True  # send test packets and capture them (needs root)
    active_runs: list[float] = field(default_factory=list)  # seconds spent per capture window
    # The live machine beyond the snapshot: tunnel counters, nudges, the cut, fresh
    # reads, the clock, the agent's tunnel history (leakcheck.disrupt.Control).
    control: "Control" = field(default_factory=_live_control)
    # The VPN clients' configuration, authentication, negotiated algorithms and installed
    # versions (leakcheck.vpnclients), read once when a posture probe first asks.
    clients: "Clients" = field(default_factory=_live_clients)
    # Configuration facts for the posture probes (leakcheck/platform/posture.py), read on
    # first use and then shared: the platform backend's reader, None = this platform has none.
    posture_reader: "Callable[[], PostureFacts] | None" = None

    @functools.cached_property
    def posture(self) -> "PostureFacts":
        """The posture facts of this run (read once, on first use)."""
        from leakcheck.platform.posture import PostureFacts
        if self.posture_reader is None:
            return PostureFacts(limits=["leakcheck has no posture reader for this platform yet"])
        return self.posture_reader()

    def active_unavailable(self) -> str | None:
        """Why active checks will not run, or None when they will."""
        if not self.active:
            return "active checks turned off (--passive or canaries.active = false)"
        from leakcheck.active import available
        return available()

    def observe(self, packets: "list[ActivePacket]") -> "list[Observation] | None":
        """Send `packets` while capturing on every interface; None when active
        checks cannot run (see active_unavailable)."""
        if not packets or self.active_unavailable():
            return None
        from leakcheck.active import ActiveUnavailable, observe
        physical = [l.name for l in self.state.links
                    if l.usable and l.name != "lo" and not self.tunnel.is_tunnel_interface(l.name)]
        tunnels = [n for n in self.tunnel.interfaces if (l := self.state.link(n)) and l.usable]
        if not physical and not tunnels:
            return None  # nothing but loopback: no packet can leave, nothing to watch
        started = time.monotonic()
        try:
            return observe(packets, physical, tunnels)
        except ActiveUnavailable:
            return None
        except (OSError, RuntimeError) as exc:
            # a capture that cannot start leaves the probe to inference, never sinks it
            log.warning("active check not run: %s", exc)
            return None
        finally:
            self.active_runs.append(time.monotonic() - started)

    def canaries(self, family: int) -> list[Any]:
        """The configured canaries of one family: where test packets may go."""
        return [ipaddress.ip_address(t) for t in self.config.get("canaries", f"ipv{family}")]

    def destinations(self, family: int) -> tuple[list[Any], str]:
        """Internet destinations of one family to ask about, and where they come from
        ("config" or "built-in"): the canaries, or BUILTIN_DESTINATIONS when none are set."""
        configured = self.canaries(family)
        if configured:
            return configured, "config"
        return [ipaddress.ip_address(t) for t in BUILTIN_DESTINATIONS[family]], "built-in"

    @functools.cached_property
    def allowed_direct(self) -> list[IPNetwork]:
        """policy.allowed_direct, parsed once per run (probes ask per address)."""
        return [ipaddress.ip_network(p) for p in self.config.get("policy", "allowed_direct")]

    def is_allowed_direct(self, addr: Any) -> IPNetwork | None:
        """The managed exception covering `addr` (an address or prefix), or None."""
        for net in self.allowed_direct:
            if isinstance(addr, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                if addr.version == net.version and addr.subnet_of(net):  # type: ignore[arg-type]
                    return net
            elif addr.version == net.version and addr in net:
                return net
        return None


class Probe:
    """Base class of every probe. Subclasses set the class attributes and `run`."""

    name: ClassVar[str] = ""
    leak_class: ClassVar[str] = ""
    finding_ids: ClassVar[tuple[str, ...]] = ()
    # Which NCSC recommendations (keys of leakcheck.report.RECOMMENDATIONS) this probe
    # checks: reported with its result, so fleet conformance needs no probe names.
    checks: ClassVar[tuple[str, ...]] = ()
    needs_root: ClassVar[bool] = False  # without root the probe is skipped, with this reason
    # Changes routes/firewall or cuts the tunnel: runs after every non-disruptive probe
    # (plugins included), and only when disruptive tests are enabled...
    disruptive: ClassVar[bool] = False
    # ...unless it also has a passive half: then it always runs, and must only disrupt
    # when ctx.disruptive is true.
    passive_half: ClassVar[bool] = False
    # Deadline: still running after this many seconds, the probe is reported as `error`
    # and the run goes on without it (leakcheck/runner.py).
    timeout_s: ClassVar[float] = 10.0

    def run(self, ctx: ProbeContext) -> list[Finding]:
        raise NotImplementedError

    def finding(self, finding_id: str, severity: Severity, summary: str, evidence: dict[str, Any],
                recommendation: str, guidance: str, effect: Effect = Effect.LEAK) -> Finding:
        """Build a finding, checking the id is one this probe declared."""
        if finding_id not in self.finding_ids:
            raise ValueError(f"probe {self.name} did not declare finding id {finding_id}")
        return Finding(id=finding_id, severity=severity, summary=summary, evidence=evidence,
                       recommendation=recommendation, guidance=guidance, effect=effect)

    @classmethod
    def manual(cls) -> str:
        return (cls.__doc__ or "").strip()


def validate_probe(cls: type) -> None:
    """Checked when a probe is loaded: complete metadata, ids under its own name."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"{cls!r} is not a leakcheck.probe.Probe subclass")
    if not PROBE_NAME.match(cls.name or ""):
        raise TypeError(f"{cls.__qualname__}: name {cls.name!r} must be lower-case kebab")
    if not cls.leak_class:
        raise TypeError(f"probe {cls.name}: leak_class is empty")
    if not cls.manual():
        raise TypeError(f"probe {cls.name}: a docstring (its manual) is required")
    if not cls.finding_ids:
        raise TypeError(f"probe {cls.name}: finding_ids is empty")
    timeout = cls.timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise TypeError(f"probe {cls.name}: timeout_s must be a positive number of seconds, not {timeout!r}")
    unknown = [key for key in cls.checks if key not in RECOMMENDATIONS]
    if unknown:
        raise TypeError(f"probe {cls.name}: checks {unknown} are not recommendation keys "
                        f"({', '.join(RECOMMENDATIONS)})")
    for fid in cls.finding_ids:
        if not fid.startswith(cls.name + "."):
            raise TypeError(f"probe {cls.name}: finding id {fid!r} must start with {cls.name!r}.")
        Finding(id=fid, severity=Severity.INFO, summary="", evidence={}, recommendation="", guidance="")
