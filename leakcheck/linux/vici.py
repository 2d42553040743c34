"""strongSwan's control socket (vici): which IKE peers a charon talks to.

charon sends IKE and UDP-encapsulated ESP from unconnected sockets (bound to
0.0.0.0:500/4500), so its sockets name no server; with kernel-libipsec there
are no xfrm policies either, only a TUN device (ipsec0) and routes. The
daemon itself knows: its IKE SAs' `remote-host`. It answers on a unix socket
(vici, default /var/run/charon.vici, configurable), which we find among the
sockets the process holds (/proc/net/unix by inode) and reach through
/proc/PID/root, so a charon in its own mount namespace is found as well.

Only `list-sas` and `list-conns` are asked (read-only). The wire format, from strongSwan's
vici documentation: a 32-bit big-endian length, then an operation byte
(CMD_REQUEST 0, CMD_RESPONSE 1, CMD_UNKNOWN 2, EVENT_REGISTER 3,
EVENT_UNREGISTER 4, EVENT_CONFIRM 5, EVENT_UNKNOWN 6, EVENT 7), a name
(8-bit length) for requests, registrations and events, then the message:
elements SECTION_START 1 (name), SECTION_END 2, KEY_VALUE 3 (name, 16-bit
length value), LIST_START 4 (name), LIST_ITEM 5 (16-bit length value),
LIST_END 6. `list-sas` streams one `list-sa` event per IKE SA, which must be
registered for first, then ends with its response.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path
from typing import Any, Iterable

CMD_REQUEST, CMD_RESPONSE, CMD_UNKNOWN = 0, 1, 2
EVENT_REGISTER, EVENT_UNREGISTER, EVENT_CONFIRM, EVENT_UNKNOWN, EVENT = 3, 4, 5, 6, 7
SECTION_START, SECTION_END, KEY_VALUE, LIST_START, LIST_ITEM, LIST_END = 1, 2, 3, 4, 5, 6
NAMED = {CMD_REQUEST, EVENT_REGISTER, EVENT_UNREGISTER, EVENT}
MAX_PACKET = 512 * 1024
TIMEOUT_S = 1.0  # a local daemon answers in milliseconds; a wedged one must not stall the run


class ViciError(Exception):
    """The socket did not answer as vici does."""


# ---------------------------------------------------------------- encoding (tests build answers with it)

def encode_message(items: dict[str, Any]) -> bytes:
    """A vici message from nested dicts (sections), lists (lists) and str/bytes values."""
    out = bytearray()
    for key, value in items.items():
        name = key.encode()
        if isinstance(value, dict):
            out += bytes([SECTION_START, len(name)]) + name + encode_message(value) + bytes([SECTION_END])
        elif isinstance(value, list):
            out += bytes([LIST_START, len(name)]) + name
            for item in value:
                data = item.encode() if isinstance(item, str) else item
                out += bytes([LIST_ITEM]) + struct.pack("!H", len(data)) + data
            out += bytes([LIST_END])
        else:
            data = value.encode() if isinstance(value, str) else value
            out += bytes([KEY_VALUE, len(name)]) + name + struct.pack("!H", len(data)) + data
    return bytes(out)


def encode_packet(operation: int, name: str = "", message: dict[str, Any] | None = None) -> bytes:
    body = bytes([operation])
    if operation in NAMED:
        body += bytes([len(name)]) + name.encode()
    body += encode_message(message or {})
    return struct.pack("!I", len(body)) + body


# ---------------------------------------------------------------- decoding

def decode_message(data: bytes) -> dict[str, Any]:
    """Nested dicts/lists of str from a vici message (ViciError if malformed)."""
    root: dict[str, Any] = {}
    stack = [root]
    current_list: list[str] | None = None
    pos = 0

    def name() -> str:
        nonlocal pos
        if pos >= len(data):
            raise ViciError("truncated name")
        length = data[pos]
        text = data[pos + 1:pos + 1 + length]
        if len(text) != length:
            raise ViciError("truncated name")
        pos += 1 + length
        return text.decode(errors="replace")

    def value() -> str:
        nonlocal pos
        if pos + 2 > len(data):
            raise ViciError("truncated value")
        (length,) = struct.unpack("!H", data[pos:pos + 2])
        text = data[pos + 2:pos + 2 + length]
        if len(text) != length:
            raise ViciError("truncated value")
        pos += 2 + length
        return text.decode(errors="replace")

    while pos < len(data):
        kind = data[pos]
        pos += 1
        if kind == SECTION_START:
            section: dict[str, Any] = {}
            stack[-1][name()] = section
            stack.append(section)
        elif kind == SECTION_END:
            if len(stack) == 1:
                raise ViciError("unbalanced section end")
            stack.pop()
        elif kind == KEY_VALUE:
            key = name()
            stack[-1][key] = value()
        elif kind == LIST_START:
            current_list = []
            stack[-1][name()] = current_list
        elif kind == LIST_ITEM:
            if current_list is None:
                raise ViciError("list item outside a list")
            current_list.append(value())
        elif kind == LIST_END:
            current_list = None
        else:
            raise ViciError(f"unknown element type {kind}")
    if len(stack) != 1:
        raise ViciError("unterminated section")
    return root


def decode_packet(body: bytes) -> tuple[int, str, dict[str, Any]]:
    """(operation, name, message) of one packet body (without its length prefix)."""
    if not body:
        raise ViciError("empty packet")
    operation, pos, name = body[0], 1, ""
    if operation in NAMED:
        if len(body) < 2 or len(body) < 2 + body[1]:
            raise ViciError("truncated packet name")
        name = body[2:2 + body[1]].decode(errors="replace")
        pos = 2 + body[1]
    return operation, name, decode_message(body[pos:])


def peers_of(sas: Iterable[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(IKE SA name, state, remote-host) of every IKE SA in `list-sa` events; only
    remote hosts that are IP addresses (charon reports them resolved)."""
    out = []
    for event in sas:
        for sa_name, sa in event.items():
            if not isinstance(sa, dict):
                continue
            remote = sa.get("remote-host")
            try:
                address = str(ipaddress.ip_address(str(remote)))
            except ValueError:
                continue
            out.append((sa_name, str(sa.get("state", "?")), address))
    return out


# ---------------------------------------------------------------- talking to charon

def _recv_exact(sock: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise ViciError("connection closed")
        data += chunk
    return data


def _recv_packet(sock: socket.socket) -> tuple[int, str, dict[str, Any]]:
    (length,) = struct.unpack("!I", _recv_exact(sock, 4))
    if length > MAX_PACKET:
        raise ViciError(f"packet of {length} bytes")
    return decode_packet(_recv_exact(sock, length))


def _streamed(path: str | os.PathLike, command: str, event_name: str, timeout: float) -> list[dict[str, Any]]:
    """The events charon streams for a listing command (`list-sas` -> `list-sa`,
    `list-conns` -> `list-conn`), registered for first, ended by the response."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
            sock.sendall(encode_packet(EVENT_REGISTER, event_name))
            operation, _, _ = _recv_packet(sock)
            if operation != EVENT_CONFIRM:
                raise ViciError(f"{event_name} registration refused (operation {operation})")
            sock.sendall(encode_packet(CMD_REQUEST, command, {"noblock": "yes"}))
            events = []
            while True:
                operation, name, message = _recv_packet(sock)
                if operation == EVENT and name == event_name:
                    events.append(message)
                elif operation == CMD_RESPONSE:
                    return events
                elif operation == CMD_UNKNOWN:
                    raise ViciError(f"{command} unknown to this daemon")
        except OSError as exc:
            raise ViciError(str(exc)) from exc


def list_sas(path: str | os.PathLike, timeout: float = TIMEOUT_S) -> list[dict[str, Any]]:
    """The `list-sa` events charon streams for `list-sas` (one dict per IKE SA)."""
    return _streamed(path, "list-sas", "list-sa", timeout)


def list_conns(path: str | os.PathLike, timeout: float = TIMEOUT_S) -> list[dict[str, Any]]:
    """The `list-conn` events charon streams for `list-conns` (one dict per loaded
    connection: addresses, version, `local-N`/`remote-N` auth rounds with their
    `class`, children). Read-only, like list-sas."""
    return _streamed(path, "list-conns", "list-conn", timeout)


# ---------------------------------------------------------------- finding the socket of a process

def unix_socket_paths(inodes: set[int], proc_net_unix: str) -> list[str]:
    """Paths of the listening unix sockets among `inodes` (text of /proc/net/unix)."""
    out = []
    for line in proc_net_unix.splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]; flags 00010000 = __SO_ACCEPTCON (listening)
        if len(fields) < 8 or not fields[6].isdigit() or int(fields[6]) not in inodes:
            continue
        if int(fields[3], 16) & 0x10000 and fields[7].startswith("/"):
            out.append(fields[7])
    return out


def control_socket(pid: int, inodes: set[int], root: Path = Path("/proc")) -> Path | None:
    """The vici socket a charon (pid) listens on, as reachable from here
    (through /proc/PID/root: the daemon may live in another mount namespace)."""
    try:
        table = (root / "net" / "unix").read_text()
    except OSError:
        return None
    for path in unix_socket_paths(inodes, table):
        if path.endswith(".vici"):
            return root / str(pid) / "root" / path.lstrip("/")
    return None


__all__ = ["ViciError", "list_sas", "list_conns", "peers_of", "control_socket", "unix_socket_paths", "encode_packet",
           "encode_message", "decode_packet", "decode_message"]
