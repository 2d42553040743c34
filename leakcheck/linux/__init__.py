"""Linux readers: build a NetState from netlink, /proc and a few tools."""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from leakcheck.netstate import NetState

log = logging.getLogger(__name__)
T = TypeVar("T")


def read_state() -> NetState:
    """Read the whole network state once. Parts that cannot be read are noted,
    not fatal: a probe that needs them says so."""
    from leakcheck.linux import (accounts, downstream, firewall, netlink, resolvers, sockets, sysctl, tunowners,
                                 wireguard, xfrm)

    notes: list[str] = []
    links, addresses, routes, rules = netlink.dump_all()
    policies, states = xfrm.read(notes)
    resolver_list, stub = resolvers.read(notes, links)
    wg = wireguard.read([link.name for link in links], notes)
    names = [link.name for link in links]
    # perapp and tethering: firewall rules, processes with their sockets, what each link is
    fw = _guarded("firewall", lambda: firewall.read(notes), notes)
    activity = _guarded("activity", lambda: sockets.read(notes, {l.index: l.name for l in links}), notes)
    # the servers of tun/tap/ppp clients: the sockets of the process holding the device
    owners = _guarded("tunnel owners", lambda: tunowners.read(
        links, addresses, routes, activity.sockets if activity else None, notes,
        tun_holders=[p.pid for p in activity.processes if p.tunnel_client] if activity else None), notes) or ()
    details = _guarded("link details", lambda: downstream.read(links), notes) or ()
    sysctls = {**sysctl.read(names), **downstream.forwarding_sysctls(names)}
    users = _guarded("accounts", accounts.read, notes) or {}
    return NetState(links=links, addresses=addresses, routes=routes, rules=rules,
                    xfrm_policies=policies, xfrm_states=states, resolvers=resolver_list,
                    sysctls=sysctls, wireguard=wg, stub_resolver=stub, notes=tuple(notes),
                    firewall=fw, activity=activity, link_details=details,
                    tunnel_owners=owners, accounts=users)


def _guarded(what: str, read: Callable[[], T], notes: list[str]) -> T | None:
    """Optional parts of the state: a failure is a note (the probes that need
    the part say they could not see it), never a failed run."""
    try:
        return read()
    except Exception as exc:
        log.debug("reading %s failed", what, exc_info=True)
        notes.append(f"{what}: not read ({type(exc).__name__}: {exc})")
        return None
