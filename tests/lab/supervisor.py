"""A VPN client's connectivity monitor, for the lab's reconnect scenarios.

Runs inside the laptop namespace (started by `Lab.start_supervisor`, a fault
in tests/lab/scenarios.py). It watches the tunnel as real clients do
(OpenVPN's ping / ping-restart, the connectivity monitors of commercial
clients): an ICMP echo to the gateway's inner address through wg0 every
PING_S; no reply for `--detect` seconds means the tunnel is lost. Then, by
`--mode`:

- fail-open: remove wg-quick's policy rules (both families), so traffic
  falls back to the main table's default via eth0, as clients that tear
  their routes down on failure do; retry every `--retry` seconds and put
  the rules back (same priorities) on the first reply.
- give-up: delete wg0 (wireguard-go exits with it) and the rules, then
  exit: the tunnel stays down and traffic goes out of eth0.

Prints "ready" once the first reply came (the tunnel works); logs every
transition with a timestamp on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

PING_S = 0.1
WG_QUICK_TABLE = "51820"


def log(message: str) -> None:
    print(f"{time.time():.3f} supervisor: {message}", file=sys.stderr, flush=True)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class Pinger:
    """ICMP echo to `target` bound to `ifname`; `ping(wait)` is True on a reply."""

    def __init__(self, target: str, ifname: str):
        self.target, self.ident, self.seq = target, os.getpid() & 0xFFFF, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())

    def send(self) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        body = b"lab-supervisor"
        packet = header[:2] + struct.pack("!H", checksum(header + body)) + header[4:] + body
        try:
            self.sock.sendto(packet, (self.target, 0))
        except OSError:
            pass  # no route / interface gone: counts as no reply

    def replies(self, wait: float) -> bool:
        """Drain replies for up to `wait` seconds; True if one of ours came."""
        got = False
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(0.0, left))
            if not ready:
                return got
            data, peer = self.sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            if peer[0] == self.target and len(data) >= ihl + 8:
                kind, _, _, ident, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if kind == 0 and ident == self.ident:
                    got = True
                    deadline = time.monotonic()  # drain what is queued, then return


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=False, capture_output=True)


def wg_quick_rules() -> list[tuple[str, str, list[str]]]:
    """(family flag, priority, selector words) of wg-quick's two rules per family."""
    out = []
    for family in ("-4", "-6"):
        done = subprocess.run(["ip", "-j", family, "rule", "show"], capture_output=True, text=True, check=True)
        for rule in json.loads(done.stdout or "[]"):
            if str(rule.get("table")) == WG_QUICK_TABLE and "not" in rule:  # iproute2 prints "not": null
                out.append((family, str(rule["priority"]), ["not", "fwmark", str(int(str(rule["fwmark"]), 0)),
                                                            "table", WG_QUICK_TABLE]))
            elif "suppress_prefixlen" in rule:
                out.append((family, str(rule["priority"]), ["table", "main", "suppress_prefixlength",
                                                            str(rule["suppress_prefixlen"])]))
    return out


def drop_rules(rules: list[tuple[str, str, list[str]]]) -> None:
    for family, priority, _ in rules:
        ip(family, "rule", "del", "priority", priority)


def restore_rules(rules: list[tuple[str, str, list[str]]]) -> None:
    for family, priority, words in rules:
        ip(family, "rule", "add", *words, "priority", priority)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fail-open", "give-up"), required=True)
    parser.add_argument("--gateway", required=True, help="the tunnel's far end (inner address)")
    parser.add_argument("--ifname", default="wg0")
    parser.add_argument("--detect", type=float, default=0.8, help="seconds without a reply = lost")
    parser.add_argument("--retry", type=float, default=2.0, help="fail-open: seconds between retries")
    args = parser.parse_args(argv)

    pinger = Pinger(args.gateway, args.ifname)
    rules = wg_quick_rules()
    deadline = time.monotonic() + 10
    while True:
        pinger.send()
        if pinger.replies(PING_S):
            break
        if time.monotonic() > deadline:
            log("no reply from the gateway at start")
            return 1
    last_reply = time.monotonic()
    print("ready", flush=True)
    log(f"watching {args.ifname} -> {args.gateway}, mode {args.mode}, rules {rules}")
    while True:
        pinger.send()
        if pinger.replies(PING_S):
            last_reply = time.monotonic()
            continue
        if time.monotonic() - last_reply < args.detect:
            continue
        if args.mode == "give-up":
            ip("link", "del", args.ifname)
            drop_rules(rules)
            log("tunnel lost: wg0 and wg-quick's rules removed; giving up")
            return 0
        drop_rules(rules)
        log("tunnel lost: wg-quick's rules removed (traffic falls back to eth0)")
        while True:
            time.sleep(args.retry)
            pinger.send()
            if pinger.replies(0.3):
                restore_rules(rules)
                last_reply = time.monotonic()
                log("tunnel back: wg-quick's rules restored")
                break
            log("retry: no reply")


if __name__ == "__main__":
    raise SystemExit(main())
