"""A tiny DNS responder for the lab: proves where a query went.

Answers every A query with one fixed IPv4 address and every AAAA query with
one fixed IPv6 address (other types: NOERROR, no answer), and appends one
JSON line per query to a log file:

    {"time": 1700000000.1, "server": "vpn", "dst": "100.100.0.1", "src": "100.100.0.2",
     "sport": 40000, "name": "example.com", "qname": "example.com", "qtype": "A", "id": 4660}

("qname" is the same as "name", lower-cased, without the trailing dot.)

UDP only, standard library only, runnable as a script (the lab starts it
with `ip netns exec NS python3 tests/lab/dnsd.py ...`). Listening sockets
use IP_FREEBIND, so an address may be bound before it exists (the isp's
100.64.0.1 comes and goes with each laptop reset). Prints "ready" on stdout
once every socket is bound. The helpers `build_query`, `parse_response`
and `query` are the client side the lab tests use.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

QTYPES = {1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 33: "SRV", 65: "HTTPS", 255: "ANY"}
QTYPE_NUMBERS = {name: number for number, name in QTYPES.items()}
IP_FREEBIND = 15
IPV6_FREEBIND = 78
TTL = 60


class Malformed(ValueError):
    pass


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while True:
        if offset >= len(data):
            raise Malformed("name runs past the end")
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise Malformed("compressed name in a question")
        if offset + length > len(data):
            raise Malformed("label runs past the end")
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), offset


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError(f"label too long: {label!r}")
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def parse_question(data: bytes) -> tuple[int, int, str, int, int, int]:
    """(id, flags, qname, qtype, qclass, end offset of the first question)."""
    if len(data) < 12:
        raise Malformed("short header")
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000:
        raise Malformed("a response, not a query")
    if qdcount < 1:
        raise Malformed("no question")
    name, offset = _read_name(data, 12)
    if offset + 4 > len(data):
        raise Malformed("short question")
    qtype, qclass = struct.unpack("!HH", data[offset:offset + 4])
    return ident, flags, name, qtype, qclass, offset + 4


def build_response(query: bytes, answer_v4: str, answer_v6: str) -> tuple[bytes, dict]:
    ident, flags, name, qtype, qclass, end = parse_question(query)
    opcode = (flags >> 11) & 0xF
    question = query[12:end]
    rcode = 0 if opcode == 0 else 4  # NOTIMP for anything but a standard query
    answers = b""
    count = 0
    if rcode == 0 and qclass == 1 and qtype in (1, 28):
        rdata = socket.inet_pton(socket.AF_INET if qtype == 1 else socket.AF_INET6,
                                 answer_v4 if qtype == 1 else answer_v6)
        answers = struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL, len(rdata)) + rdata
        count = 1
    out_flags = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", ident, out_flags, 1, count, 0, 0)
    qname = name.lower().rstrip(".") or "."
    record = {"name": qname, "qname": qname, "qtype": QTYPES.get(qtype, str(qtype)), "id": ident}
    return header + question + answers, record


def build_query(name: str, qtype: str | int = "A", ident: int | None = None) -> bytes:
    number = QTYPE_NUMBERS[qtype] if isinstance(qtype, str) else qtype
    ident = int.from_bytes(os.urandom(2), "big") if ident is None else ident
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", number, 1)


def parse_response(data: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, answer addresses) of a response to a single question."""
    if len(data) < 12:
        raise Malformed("short header")
    ident, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    offset = 12
    for _ in range(qdcount):
        _, offset = _read_name(data, offset)
        offset += 4
    addresses = []
    for _ in range(ancount):
        if data[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            _, offset = _read_name(data, offset)
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        rdata = data[offset:offset + rdlen]
        offset += rdlen
        if rtype == 1 and rdlen == 4:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlen == 16:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return ident, flags & 0xF, addresses


def query(sock: socket.socket, server: str, name: str, qtype: str = "A", timeout: float = 1.0,
          port: int = 53) -> list[str] | None:
    """Ask `server` over `sock` (a UDP socket of the right family); None on timeout."""
    packet = build_query(name, qtype)
    ident = struct.unpack("!H", packet[:2])[0]
    sock.settimeout(timeout)
    sock.sendto(packet, (server, port))
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data, _ = sock.recvfrom(4096)
        except (socket.timeout, BlockingIOError):
            return None
        try:
            got, _, addresses = parse_response(data)
        except (Malformed, struct.error, IndexError):
            continue
        if got == ident:
            return addresses


def _listen(address: str, port: int) -> socket.socket:
    version = ipaddress.ip_address(address).version
    sock = socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if version == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        except OSError:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def serve(listen: list[str], log_path: str, label: str, answer_v4: str, answer_v6: str, port: int = 53) -> None:
    selector = selectors.DefaultSelector()
    for address in listen:
        selector.register(_listen(address, port), selectors.EVENT_READ, address)
    log = open(log_path, "a", buffering=1, encoding="utf-8")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            try:
                data, peer = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                continue
            try:
                response, record = build_response(data, answer_v4, answer_v6)
            except (Malformed, struct.error, UnicodeError):
                continue
            record = {"time": round(time.time(), 6), "server": label, "dst": key.data,
                      "src": peer[0].split("%")[0], "sport": peer[1], **record}
            log.write(json.dumps(record, sort_keys=True) + "\n")
            try:
                sock.sendto(response, peer)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True, metavar="ADDR",
                        help="address to answer on (repeatable; need not exist yet)")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--log", required=True, help="append one JSON line per query here")
    parser.add_argument("--label", default="dnsd", help="server name written in each log line")
    parser.add_argument("--a", default="198.51.100.1", help="answer for A queries")
    parser.add_argument("--aaaa", default="2001:db8:ffff::1", help="answer for AAAA queries")
    args = parser.parse_args(argv)
    serve(args.listen, args.log, args.label, args.a, args.aaaa, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
