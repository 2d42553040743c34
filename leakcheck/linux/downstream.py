"""What each link is, for the tethering probe: USB gadget, Wi-Fi (and in
which mode), bridge, veth into another namespace; plus the per-interface
IPv4 forwarding switches.

Sources: /sys/class/net/<if>/uevent (DEVTYPE), its driver link, phy80211
(wireless), iflink (a veth's peer), and `iw dev <if> info` for the Wi-Fi
mode when iw is installed. `ip netns exec` remounts /sys, so this is the
namespace's own view.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from leakcheck.netstate import Link, LinkDetail

SYS_NET = Path("/sys/class/net")
PROC_CONF = Path("/proc/sys/net/ipv4/conf")


def read(links: Iterable[Link], root: Path = SYS_NET) -> tuple[LinkDetail, ...]:
    links = list(links)
    iflinks = {link.name: _int_file(root / link.name / "iflink") for link in links}
    by_index = {link.index: link for link in links}
    out = []
    for link in links:
        if link.name == "lo":
            continue
        base = root / link.name
        devtype = _uevent(base).get("DEVTYPE")
        wireless = (base / "phy80211").exists() or (base / "wireless").exists()
        out.append(LinkDetail(name=link.name, devtype=devtype or ("wlan" if wireless else None),
                              driver=_driver(base), wireless_mode=_wifi_mode(link.name) if wireless else None,
                              peer_elsewhere=link.kind == "veth" and not _peer_here(link, iflinks, by_index)))
    return tuple(out)


def forwarding_sysctls(ifnames: Iterable[str], root: Path = PROC_CONF) -> dict[str, str]:
    """net.ipv4.conf.<if>.forwarding for every link (the kernel checks it on the input interface)."""
    out = {}
    for name in ifnames:
        try:
            out[f"net.ipv4.conf.{name}.forwarding"] = (root / name / "forwarding").read_text().strip()
        except OSError:
            continue
    return out


def _peer_here(link: Link, iflinks: dict[str, int | None], by_index: dict[int, Link]) -> bool:
    """A veth whose peer is a link of this namespace pointing back at it."""
    peer = by_index.get(iflinks.get(link.name) or -1)
    return peer is not None and peer.kind == "veth" and iflinks.get(peer.name) == link.index


def _uevent(base: Path) -> dict[str, str]:
    try:
        text = (base / "uevent").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _driver(base: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(base / "device" / "driver"))
    except OSError:
        return None


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _wifi_mode(ifname: str) -> str | None:
    """`iw dev IF info` says "type AP" for a hotspot (None when iw is missing)."""
    if not shutil.which("iw"):
        return None
    try:
        done = subprocess.run(["iw", "dev", ifname, "info"], capture_output=True, text=True, timeout=2,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^\s*type\s+(\S+)", done.stdout, re.MULTILINE)
    return match.group(1) if match else None
