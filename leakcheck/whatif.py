"""What if the tunnel dropped now? The egress verdict on a copy of the state.

The forced-VPN question cannot be asked of the live kernel without cutting
the tunnel (the reconnect probe does that, only when disruptive tests are
enabled). Instead the network state read for this run is copied with the
tunnel taken away, the way the kernel would hold it after the VPN client
died:

- the tunnel links are down (a dead tun/wg device is deleted or loses its
  routes with it), and their addresses and every route through them gone;
- policy rules naming a tunnel interface (iif/oif) gone; rules pointing at
  the client's own routing table stay, as the kernel keeps them, and fall
  through once that table is empty (wg-quick's `not fwmark 51820 lookup
  51820`, strongSwan's table 220);
- IPsec out-policies that encapsulate (tunnel-mode templates) gone, since
  the IKE daemon removes them with the SA; block policies stay;
- the firewall unchanged: a kill switch is exactly what must remain.

Then the one egress verdict (leakcheck.oracle) is asked, with the route
decision taken from leakcheck.fibmodel (the kernel model that is checked
against the real kernel) instead of the netlink socket. Nothing on the
machine is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from leakcheck.fibmodel import ModelKernel
from leakcheck.netstate import NetState
from leakcheck.oracle import Egress, Oracle
from leakcheck.tunnel import Tunnel


@dataclass(frozen=True)
class WhatIf:
    """The state without its tunnel, and what was taken away (evidence)."""

    state: NetState
    tunnel: Tunnel
    removed: dict[str, Any]

    def oracle(self) -> Oracle:
        return Oracle(self.state, self.tunnel, lookup=ModelKernel(self.state))


def without_tunnel(state: NetState, tunnel: Tunnel) -> WhatIf:
    """A copy of `state` as it would be with the tunnel gone (see the module docstring)."""
    names = set(tunnel.interfaces)
    links = tuple(replace(l, admin_up=False, oper_state="DOWN") if l.name in names else l for l in state.links)
    routes = [r for r in state.routes if not names.intersection(r.ifnames)]
    rules = [r for r in state.rules if r.iif not in names and r.oif not in names]
    policies = [p for p in state.xfrm_policies if not p.protects]
    gone_routes = [r for r in state.routes if names.intersection(r.ifnames) and r.type == "unicast"]
    removed: dict[str, Any] = {
        "links_down": sorted(names),
        "routes": [r.describe() for r in gone_routes if r.table != 255][:20],  # not the local table's
        "routes_count": len(state.routes) - len(routes),
        "rules": [r.describe() for r in state.rules if r not in rules],
        "xfrm_policies": [p.describe() for p in state.xfrm_policies if p.protects][:20],
    }
    copy = replace(state, links=links, addresses=tuple(a for a in state.addresses if a.ifname not in names),
                   routes=tuple(routes), rules=tuple(rules), xfrm_policies=tuple(policies), wireguard=())
    down = Tunnel(state="down" if tunnel.state != "absent" else "absent", kind=tunnel.kind,
                  interfaces=tunnel.interfaces, policy_ipsec=False)
    return WhatIf(copy, down, removed)


def egress_without_tunnel(state: NetState, tunnel: Tunnel, destinations: list[Any]) -> tuple[WhatIf, list[Egress]]:
    """Where traffic to each destination would go with the tunnel gone."""
    what = without_tunnel(state, tunnel)
    oracle = what.oracle()
    try:
        return what, oracle.egress_many([oracle.query(d) for d in destinations])
    finally:
        oracle.close()
