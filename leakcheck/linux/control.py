"""The Linux side of the reconnect probe's live control (leakcheck.disrupt.LiveControl):
the tunnel's live counters, a fresh read of the routing state, and the cut."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from leakcheck.disrupt import Pulse
from leakcheck.linux import nftcut
from leakcheck.netstate import NetState

SYS_NET = Path("/sys/class/net")


def read_pulse(names: Sequence[str], wireguard_names: Sequence[str] = (), sys_net: Path = SYS_NET) -> Pulse:
    """Packets received per tunnel interface (with its ifindex: a re-created one
    counts from zero) and the newest WireGuard handshake among them."""
    rx = {}
    for name in names:
        base = sys_net / name
        try:
            rx[name] = (int((base / "ifindex").read_text()), int((base / "statistics" / "rx_packets").read_text()))
        except (OSError, ValueError):
            continue  # gone (a client that tore its interface down)
    handshake = None
    live_wg = [n for n in wireguard_names if n in rx]
    if live_wg:
        from leakcheck.linux import wireguard
        stamps = [w.latest_handshake for w in wireguard.read(live_wg, []) if w.latest_handshake]
        handshake = max(stamps) if stamps else None
    return Pulse(rx=rx, handshake=handshake)


def read_routing_state() -> NetState:
    """Links, addresses, routes, rules, xfrm and WireGuard, read again now. Resolvers,
    firewall and process sockets are left out: they cost more than the rest together
    and a look happens twice a second."""
    from leakcheck.linux import netlink, wireguard, xfrm

    notes: list[str] = []
    links, addresses, routes, rules = netlink.dump_all()
    policies, states = xfrm.read(notes)
    return NetState(links=links, addresses=addresses, routes=routes, rules=rules, xfrm_policies=policies,
                    xfrm_states=states, wireguard=wireguard.read([l.name for l in links], notes),
                    notes=tuple(notes))


def cut(addresses: Sequence[str], seconds: float) -> nftcut.Cut:
    return nftcut.cut(addresses, seconds)
