"""Linux readers: build a NetState from netlink, /proc and a few tools."""

from __future__ import annotations

import logging

from leakcheck.netstate import NetState

log = logging.getLogger(__name__)


def read_state() -> NetState:
    """Read the whole network state once. Parts that cannot be read are noted,
    not fatal: a probe that needs them says so."""
    from leakcheck.linux import netlink, resolvers, sysctl, wireguard, xfrm

    notes: list[str] = []
    links, addresses, routes, rules = netlink.dump_all()
    policies, states = xfrm.read(notes)
    resolver_list, stub = resolvers.read(notes, links)
    wg = wireguard.read([link.name for link in links], notes)
    return NetState(links=links, addresses=addresses, routes=routes, rules=rules,
                    xfrm_policies=policies, xfrm_states=states, resolvers=resolver_list,
                    sysctls=sysctl.read([link.name for link in links]), wireguard=wg,
                    stub_resolver=stub, notes=tuple(notes))
