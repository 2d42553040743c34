"""Linux readers: build a NetState from netlink, /proc and a few tools."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, TypeVar

from leakcheck.netstate import NetState

log = logging.getLogger(__name__)
T = TypeVar("T")


def read_state() -> NetState:
    """Read the whole network state once. Parts that cannot be read are noted,
    not fatal: a probe that needs them says so.

    The netlink dump comes first (every other reader needs the links); then
    the readers that wait on tools and the kernel (ip xfrm, resolvectl, wg,
    nft/iptables-save, sock_diag and /proc, iw) run side by side in threads:
    they spend their time waiting on child processes, not holding the GIL.
    Each keeps its own notes, joined in a fixed order."""
    from leakcheck.linux import (accounts, downstream, firewall, netlink, resolvers, sockets, sysctl, tunowners,
                                 wireguard, xfrm)

    links, addresses, routes, rules = netlink.dump_all()
    names = [link.name for link in links]
    ifnames = {link.index: link.name for link in links}
    readers = _Parallel()
    xfrm_part = readers.start("xfrm", lambda notes: xfrm.read(notes))
    resolver_part = readers.start("resolvers", lambda notes: resolvers.read(notes, links))
    wg_part = readers.start("wireguard", lambda notes: wireguard.read(names, notes))
    # perapp and tethering: firewall rules, processes with their sockets, what each link is
    fw_part = readers.start("firewall", lambda notes: _guarded("firewall", lambda: firewall.read(notes), notes))
    activity_part = readers.start("activity", lambda notes: _activity_and_owners(
        notes, lambda: sockets.read(notes, ifnames),
        lambda activity: tunowners.read(
            links, addresses, routes, activity.sockets if activity else None, notes,
            tun_holders=[p.pid for p in activity.processes if p.tunnel_client] if activity else None)))
    details_part = readers.start("link details", lambda notes: _guarded(
        "link details", lambda: downstream.read(links), notes) or ())
    sysctls = {**sysctl.read(names), **downstream.forwarding_sysctls(names)}
    notes = readers.join()
    # after the threads: the account database (getpwent) is not safe to walk beside other pwd users
    users = _guarded("accounts", accounts.read, notes) or {}
    policies, states = xfrm_part.value
    resolver_list, stub = resolver_part.value
    activity, owners = activity_part.value
    return NetState(links=links, addresses=addresses, routes=routes, rules=rules,
                    xfrm_policies=policies, xfrm_states=states, resolvers=resolver_list,
                    sysctls=sysctls, wireguard=wg_part.value, stub_resolver=stub, notes=tuple(notes),
                    firewall=fw_part.value, activity=activity, link_details=details_part.value,
                    tunnel_owners=owners, accounts=users)


def _activity_and_owners(notes: list[str], read_activity: Callable[[], Any],
                         read_owners: Callable[[Any], Any]) -> tuple[Any, tuple]:
    """Processes and sockets, then the servers of tun/tap/ppp clients: the
    sockets of the process holding the device (they need the first), in one thread."""
    activity = _guarded("activity", read_activity, notes)
    owners = _guarded("tunnel owners", lambda: read_owners(activity), notes) or ()
    return activity, owners


class _Part:
    """One reader running in its thread: its value, its notes, what it raised."""

    def __init__(self, what: str, read: Callable[[list[str]], Any]):
        self.what = what
        self.notes: list[str] = []
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(read,), name=f"read-{what}", daemon=True)

    def _run(self, read: Callable[[list[str]], Any]) -> None:
        try:
            self.value = read(self.notes)
        except BaseException as exc:  # handed to the caller's thread by _Parallel.join
            self.error = exc


class _Parallel:
    def __init__(self) -> None:
        self.parts: list[_Part] = []

    def start(self, what: str, read: Callable[[list[str]], Any]) -> _Part:
        part = _Part(what, read)
        self.parts.append(part)
        part.thread.start()
        return part

    def join(self) -> list[str]:
        """Wait for every reader; their notes in start order. A reader's
        exception is raised here, as it would have been without threads."""
        for part in self.parts:
            part.thread.join()
        for part in self.parts:
            if part.error is not None:
                raise part.error
        return [note for part in self.parts for note in part.notes]


def _guarded(what: str, read: Callable[[], T], notes: list[str]) -> T | None:
    """Optional parts of the state: a failure is a note (the probes that need
    the part say they could not see it), never a failed run."""
    try:
        return read()
    except Exception as exc:
        log.debug("reading %s failed", what, exc_info=True)
        notes.append(f"{what}: not read ({type(exc).__name__}: {exc})")
        return None
