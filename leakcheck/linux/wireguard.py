"""WireGuard facts (peer endpoints, fwmark, last handshake).

Userspace implementations (wireguard-go, boringtun) answer on a UAPI unix
socket under /var/run/wireguard; kernel WireGuard is asked through `wg`.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
from pathlib import Path

from leakcheck.netstate import WireGuardInfo

UAPI_DIR = Path("/var/run/wireguard")


def read(ifnames: list[str], notes: list[str]) -> tuple[WireGuardInfo, ...]:
    out = []
    for name in ifnames:
        text = _uapi_get(name, notes)
        if text is None:
            text = _wg_dump(name)
        if text is not None:
            out.append(parse_uapi(name, text))
    return tuple(out)


def _uapi_get(name: str, notes: list[str]) -> str | None:
    path = UAPI_DIR / f"{name}.sock"
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"get=1\n\n")
            chunks = []
            while not b"".join(chunks).endswith(b"\n\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        notes.append(f"wireguard: cannot query {path}: {exc} (needs root)")
        return None
    return b"".join(chunks).decode("utf-8", "replace")


def _wg_dump(name: str) -> str | None:
    """Kernel WireGuard through `wg show NAME dump`, rewritten as UAPI lines."""
    if not shutil.which("wg"):
        return None
    try:
        done = subprocess.run(["wg", "show", name, "dump"], capture_output=True, text=True,
                              timeout=3, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return dump_to_uapi(done.stdout)


def dump_to_uapi(dump: str) -> str:
    lines = dump.strip().splitlines()
    if not lines:
        return ""
    out = []
    head = lines[0].split("\t")
    if len(head) >= 4 and head[3] != "off":
        out.append(f"fwmark={int(head[3], 0)}")
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) < 5:
            continue
        out.append("public_key=" + cols[0])
        if cols[2] != "(none)":
            out.append("endpoint=" + cols[2])
        for allowed in cols[3].split(","):
            if allowed and allowed != "(none)":
                out.append("allowed_ip=" + allowed)
        out.append("last_handshake_time_sec=" + cols[4])
    return "\n".join(out) + "\n\n"


def parse_uapi(name: str, text: str) -> WireGuardInfo:
    fwmark = None
    endpoints: list[str] = []
    allowed: list[str] = []
    newest = 0
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "fwmark" and value not in ("", "0"):
            fwmark = int(value)
        elif key == "endpoint":
            host = value.rsplit(":", 1)[0].strip("[]")
            try:
                endpoints.append(str(ipaddress.ip_address(host.split("%")[0])))
            except ValueError:
                pass
        elif key == "allowed_ip":
            allowed.append(value)
        elif key == "last_handshake_time_sec" and value.isdigit():
            newest = max(newest, int(value))
    return WireGuardInfo(ifname=name, fwmark=fwmark, endpoints=tuple(endpoints),
                         allowed_ips=tuple(allowed), latest_handshake=newest or None)
