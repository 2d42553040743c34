"""Properties of the forced-VPN what-if on generated network states
(tests/unit/strategies.py worlds: every tunnel kind, random routes, rules,
xfrm policies and firewalls), route decisions by the kernel model.

- posture-forced never crashes and returns a well-formed result;
- the what-if copy has no route, rule or address on a tunnel interface and
  no encapsulating IPsec policy, and the run's own state is left as it was;
- its verdict is the egress verdict's: no-lockdown exactly when some
  destination would leave a physical interface in clear, and the evidence
  names that non-tunnel interface.
"""

from __future__ import annotations

import tempfile

from hypothesis import event, given, settings

from leakcheck.oracle import Path
from leakcheck.platform.posture import PostureFacts
from leakcheck.probes.posture_forced import PostureForcedProbe
from leakcheck.whatif import egress_without_tunnel
from tests.unit.strategies import World, worlds
from tests.unit.test_probe_properties import EXAMPLES, assert_well_formed, context, run_probe


@given(world=worlds())
@settings(max_examples=EXAMPLES * 2, deadline=None)
def test_forced_what_if_agrees_with_the_egress_verdict(world: World) -> None:
    with tempfile.TemporaryDirectory() as state_dir:
        ctx = context(world, state_dir, is_root=True)
    ctx.posture_reader = lambda: PostureFacts(root="/nonexistent")
    before = repr(ctx.state)
    result = run_probe(PostureForcedProbe, ctx)
    assert_well_formed(PostureForcedProbe, result)
    assert repr(ctx.state) == before, "the run's own state was changed"
    event(f"status {result.status.value}")
    if result.status.value == "skip":
        assert ctx.state.firewall is None or not ctx.state.firewall.sources
        return
    names = set(ctx.tunnel.interfaces)
    destinations = [d for f in (4, 6) for d in ctx.destinations(f)[0]]
    what, answers = egress_without_tunnel(ctx.state, ctx.tunnel, destinations)
    assert not any(names.intersection(r.ifnames) for r in what.state.routes)
    assert not any(r.iif in names or r.oif in names for r in what.state.rules)
    assert not any(a.ifname in names for a in what.state.addresses)
    assert not any(p.protects for p in what.state.xfrm_policies)
    clear = [e for e in answers if e.path is Path.CLEAR]
    ids = [f.id for f in result.findings]
    assert ("posture-forced.no-lockdown" in ids) == bool(clear)
    assert ("posture-forced.lockdown" in ids) == (not clear)
    if clear:
        (finding,) = [f for f in result.findings if f.id == "posture-forced.no-lockdown"]
        assert finding.evidence["first_clear"]["interface"] not in names
