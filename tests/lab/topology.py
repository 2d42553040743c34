r"""The lab: three network namespaces, a real userspace WireGuard tunnel, two resolvers.

```
 [lap] eth0 100.64.0.2/24 ------------veth------------ lan0 100.64.0.1/24          [isp]
   |        2001:db8:1::2/64                                2001:db8:1::1/64
   |   resolv.conf: 100.100.0.1                         lo  198.51.100.1      canary v4
   |   (100.64.0.1 with dns-outside / none)                 2001:db8:ffff::1  canary v6
   |                                                        198.51.100.53     ISP resolver (dnsd,
   |                                                                          also on 100.64.0.1)
   |                                                   wan0 203.0.113.254/24, 2001:db8:2::254/64
   |                                                     |  routes 100.100.0.0/24, fd00:100::/64
   |                                                    veth    back via the vpn
   |                                                     |
   |                                                   eth0 203.0.113.1/24, 2001:db8:2::1/64 [vpn]
   |                                                        default via the isp; forwards
   |                                                        tunnel traffic to the "internet"
   \__ wg0 100.100.0.2/24, fd00:100::2/64 ...... wgvpn 100.100.0.1/24, fd00:100::1/64
       wireguard-go, UDP to 203.0.113.1:51820          wireguard-go, listens on 51820;
                                                       corporate resolver (dnsd) 100.100.0.1
```

Namespaces are named lc<pid>-lap, lc<pid>-isp, lc<pid>-vpn (`ip netns exec`
works on them). isp and vpn are built once (`Lab.build`, a pytest session);
the laptop is deleted and rebuilt for every scenario (`Lab.reset`), as a
correct full tunnel of one style plus named faults (tests/lab/scenarios.py).
The vpn only accepts traffic for its tunnel addresses from the tunnel, and
only lets replies (conntrack) from the internet into it: the corporate
resolver is unreachable outside the tunnel, as in real life.

wireguard-go keeps its UAPI socket in /run/wireguard/<ifname>.sock, shared by
the whole machine; the lab process therefore enters its own mount namespace
with a private tmpfs on /run/wireguard (linux.private_mounts), which every
command it starts (ip netns exec, wg, the agent) inherits. One lab runs at a
time per machine (an flock on /run/lock/leakcheck-lab.lock); namespaces of a
dead lab are removed when the next one starts. Nothing here touches the
host's own network: every link and address lives inside the lab namespaces.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tests.lab import (CANARY_V4, CANARY_V6, CORP_RESOLVER, CORP_RESOLVER_V6, DNS_ANSWER_V4, DNS_ANSWER_V6,
                       ISP_RESOLVER, LAB_CONFIG, LAN_ROUTER, LAN_ROUTER_V6, LAPTOP_LAN, LAPTOP_LAN_V6,
                       TUNNEL_GATEWAY, TUNNEL_GATEWAY_V6, TUNNEL_LAPTOP, TUNNEL_LAPTOP_V6, VPN_PORT, VPN_SERVER,
                       VPN_SERVER_V6, dnsd, linux, pcap)
from tests.lab.scenarios import FAULTS, STYLES, Scenario, ScenarioError, Step

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTURES_DIR = Path(__file__).resolve().parent / "captures"
DNSD = Path(dnsd.__file__).resolve()
SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"
LOCK_PATH = Path("/run/lock/leakcheck-lab.lock")
ETC_NETNS = Path("/etc/netns")
NAME_RE = re.compile(r"^lc(\d+)-(lap|isp|vpn)$")
ROLES = ("lap", "isp", "vpn")
ISP_LOCAL = {ipaddress.ip_address(a) for a in (CANARY_V4, CANARY_V6, ISP_RESOLVER)}
WG_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
TOOLS = ("ip", "wg", "wireguard-go", "tcpdump", "nft", "mount")
SENTINEL = b"leakcheck-lab-sentinel:"
SENTINEL_ETHERTYPE = 0x88B5  # IEEE local experimental
SENTINEL_IP_PROTO = 253  # RFC 3692 experimental
WAIT = 5.0  # seconds any single lab state may take to appear


class LabError(RuntimeError):
    """The lab could not be built, reset or asked something; the message says why."""


class CommandError(LabError):
    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = list(argv), returncode, stdout, stderr
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"`{shlex.join(self.argv)}` failed ({status}): {stderr.strip() or stdout.strip()}")


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.002) -> Any:
    """Wait for `condition()` to be truthy (returns it); LabError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- config files for the agent

def merge_config(base: dict, override: dict | None) -> dict:
    """Section-wise merge: keys of `override` win, sections absent from it are kept."""
    merged = {section: dict(body) for section, body in base.items()}
    for section, body in (override or {}).items():
        if not isinstance(body, dict):
            raise TypeError(f"config section [{section}] must be a dict, got {type(body).__name__}")
        merged.setdefault(section, {}).update(body)
    return merged


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def to_toml(config: dict) -> str:
    """{"section": {"key": str | bool | int | float | list}} as a TOML document."""
    lines = []
    for section, body in config.items():
        if not isinstance(body, dict):
            raise TypeError(f"top-level TOML values must be sections (dicts); [{section}] is {body!r}")
        lines.append(f"[{_toml_key(section)}]")
        lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in body.items()]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- results

@dataclass(repr=False)
class LabRun:
    """One agent run inside the laptop namespace."""

    argv: list[str]
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    report: Any  # parsed JSON stdout, or None
    seconds: float
    timed_out: bool = False
    config: dict | None = None
    config_path: Path | None = None

    def __str__(self) -> str:
        status = f"timed out after {self.seconds:.1f}s" if self.timed_out else \
            f"exited {self.returncode} in {self.seconds:.1f}s"
        return (f"`{shlex.join(self.argv)}` {status}\n--- stderr (tail) ---\n{self.stderr[-3000:]}"
                f"\n--- stdout (head) ---\n{self.stdout[:3000]}")

    __repr__ = __str__


@dataclass(repr=False)
class UdpTrace:
    """Where one UDP datagram from the laptop went (see Lab.trace_udp)."""

    dst: str
    port: int
    token: bytes
    send_error: str | None
    arrived_from: str | None  # source address the isp saw, None if it never arrived
    held_back: bool  # the laptop's xfrm counters say a policy held it (no ESP state)
    lan: list[pcap.Packet]  # IP packets on the laptop's eth0 while it was sent
    tunnel: list[pcap.Packet]  # the datagram decrypted at the gateway (vpn wgvpn)
    wan: list[pcap.Packet]  # the datagram on isp wan0 (between the gateway and the internet)
    pcaps: dict[str, Path] = field(default_factory=dict)

    @property
    def arrived(self) -> bool:
        return self.arrived_from is not None

    def _is_probe(self, packet: pcap.Packet) -> bool:
        return packet.is_udp and packet.dport == self.port and self.token in packet.payload

    @property
    def clear_on_lan(self) -> list[pcap.Packet]:
        """The datagram itself, in clear, on the laptop's LAN."""
        return [p for p in self.lan if self._is_probe(p)]

    @property
    def wireguard_on_lan(self) -> list[pcap.Packet]:
        return [p for p in self.lan if p.is_udp and (
            (p.dst == VPN_SERVER and p.dport == VPN_PORT) or (p.src == VPN_SERVER and p.sport == VPN_PORT))]

    @property
    def other_on_lan(self) -> list[pcap.Packet]:
        """LAN packets that are neither WireGuard to/from the server nor link housekeeping (ND, MLD)."""
        wireguard = {id(p) for p in self.wireguard_on_lan}
        return [p for p in self.lan if id(p) not in wireguard and not p.is_link_control]

    @property
    def path(self) -> str:
        """"tunnel", "clear" (seen in clear on the LAN), "held" (by an IPsec policy) or "lost"."""
        if self.clear_on_lan:
            return "clear"
        if self.tunnel:
            return "tunnel"
        if self.held_back:
            return "held"
        return "lost"

    def __str__(self) -> str:
        def listing(packets: list[pcap.Packet]) -> str:
            return "".join(f"\n    {p}" for p in packets[:20]) or " none"
        return (f"UDP to {self.dst} port {self.port}: path={self.path} arrived_from={self.arrived_from} "
                f"held_back={self.held_back} send_error={self.send_error}\n  lap eth0:{listing(self.lan)}"
                f"\n  vpn wgvpn:{listing(self.tunnel)}\n  isp wan0:{listing(self.wan)}")

    __repr__ = __str__


# ---------------------------------------------------------------- packet capture

class Capture:
    """tcpdump -w on one interface of one namespace; `packets()` any time, `stop()` at the end.

    `sync()` proves the capture is complete up to now: it sends a marker frame
    out of the interface (AF_PACKET, so routing and IPsec policies cannot
    hold it) and waits until tcpdump has written it. Packets sent on that
    interface before the marker are then in the file, or never went out.
    """

    def __init__(self, lab: "Lab", ns: str, iface: str, bpf: str, path: Path):
        self.lab, self.ns, self.iface, self.bpf, self.path = lab, lab.ns_name(ns), iface, bpf, path
        self.proc: subprocess.Popen | None = None
        self.ethernet = True
        self.stderr = b""

    def start(self) -> "Capture":
        """Start tcpdump and return once it listens."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        links = self.lab.ip_json(f"link show dev {self.iface}", ns=self.ns, check=False)
        if not links:
            raise LabError(f"capture: no interface {self.iface} in {self.ns}")
        self.ethernet = links[0].get("link_type") == "ether"
        marker = f"ether proto 0x{SENTINEL_ETHERTYPE:04x}" if self.ethernet else f"ip proto {SENTINEL_IP_PROTO}"
        bpf = [f"({self.bpf}) or ({marker})"] if self.bpf else []
        argv = ["ip", "netns", "exec", self.ns, "tcpdump", "-i", self.iface, "-n", "-U", "--immediate-mode",
                "-Z", "root", "-w", str(self.path), *bpf]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=linux.set_parent_death_signal)

    def wait_ready(self) -> None:
        """Until tcpdump says "listening on": from then on it records every packet."""
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + WAIT
        fd = self.proc.stderr.fileno()
        while b"listening on" not in self.stderr:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(remaining, 0))
            chunk = os.read(fd, 4096) if readable else b""
            self.stderr += chunk
            if (readable and not chunk) or remaining <= 0:
                self.proc.kill()
                self.proc.wait()
                raise LabError(f"tcpdump on {self.ns}/{self.iface} did not start: "
                               f"{self.stderr.decode(errors='replace').strip()}")

    def _send_sentinel(self, token: bytes) -> None:
        body = SENTINEL + token
        with self.lab.in_netns(self.ns):
            if self.ethernet:
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
                    sock.bind((self.iface, 0))
                    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", SENTINEL_ETHERTYPE) + body
                    sock.send(frame.ljust(60, b"\0"))
            else:
                header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 1, SENTINEL_IP_PROTO, 0,
                                     bytes(4), bytes(4))
                checksum = _ip_checksum(header)
                header = header[:10] + struct.pack("!H", checksum) + header[12:]
                with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)) as sock:
                    sock.sendto(header + body, (self.iface, 0x0800))

    def sync(self, timeout: float = 3.0) -> None:
        """Return once everything sent on the interface so far is in the file (LabError if not)."""
        self.finish_sync(self.begin_sync(), timeout)

    def begin_sync(self) -> bytes | None:
        if not self.running:
            return None
        token = os.urandom(8).hex().encode()
        self._send_sentinel(token)
        return SENTINEL + token

    def finish_sync(self, mark: bytes | None, timeout: float = 3.0) -> None:
        if mark is not None:
            poll(lambda: any(mark in p.frame for p in pcap.read(self.path)), timeout,
                 f"capture {self.ns}/{self.iface} to record its own marker")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def packets(self) -> list[pcap.Packet]:
        return [p for p in pcap.read(self.path) if SENTINEL not in p.frame]

    def wait_for(self, predicate: Callable[[pcap.Packet], bool], timeout: float = 2.0) -> pcap.Packet | None:
        """The first captured packet satisfying `predicate`, or None after `timeout`."""
        try:
            return poll(lambda: next((p for p in self.packets() if predicate(p)), None), timeout, "packet")
        except LabError:
            return None

    def stop(self) -> list[pcap.Packet]:
        """Sync (best effort), stop tcpdump, return the packets."""
        stop_captures([self])
        return self.packets()

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_captures(captures: Sequence[Capture], *, strict: bool = False) -> None:
    """Sync then stop several captures side by side (closing a packet socket takes a while).
    With `strict`, a capture that cannot prove it is complete raises LabError."""
    running = [c for c in captures if c.running]
    marks = []
    for capture in running:
        try:
            marks.append(capture.begin_sync())
        except OSError:
            if strict:
                raise
            marks.append(None)
    for capture, mark in zip(running, marks):
        try:
            capture.finish_sync(mark)
        except LabError:
            if strict:
                raise
    for capture in running:
        capture.proc.terminate()
    for capture in captures:
        if capture.proc is None:
            continue
        try:
            capture.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            capture.proc.kill()
            capture.proc.wait()
        if capture.proc.stderr:
            capture.proc.stderr.close()


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------- stale labs

def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None,
         env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, str(exc.stdout or ""), str(exc.stderr or "")) from None
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]}") from None
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stdout, done.stderr)
    return done


def netns_pids(name: str) -> list[int]:
    done = _run(["ip", "netns", "pids", name], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def _kill_all(pids: Iterable[int], timeout: float = 2.0) -> None:
    pids = [pid for pid in pids if pid != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(linux.pid_alive(pid) and not _is_zombie(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in pids:
        if linux.pid_alive(pid) and not _is_zombie(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def delete_netns(name: str) -> None:
    """Kill what runs in namespace `name`, delete it and its /etc/netns dir; tolerates what is gone."""
    if (linux.NETNS_RUN_DIR / name).exists():
        _kill_all(netns_pids(name))
        _run(["ip", "netns", "del", name], check=False)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def remove_stale_labs(keep_pid: int | None = None) -> list[str]:
    """Delete lc<pid>-* namespaces (and /etc/netns dirs, work dirs) whose pid is dead."""
    names: set[str] = set()
    for directory in (linux.NETNS_RUN_DIR, ETC_NETNS):
        if directory.is_dir():
            names.update(os.listdir(directory))
    removed = []
    for name in sorted(names):
        match = NAME_RE.match(name)
        if not match or int(match.group(1)) == keep_pid or linux.pid_alive(int(match.group(1))):
            continue
        delete_netns(name)
        removed.append(name)
    for workdir in Path(tempfile.gettempdir()).glob("lc*-lab-*"):
        match = re.match(r"^lc(\d+)-lab-", workdir.name)
        if match and int(match.group(1)) != keep_pid and not linux.pid_alive(int(match.group(1))):
            shutil.rmtree(workdir, ignore_errors=True)
    return removed


# ---------------------------------------------------------------- the lab

class Lab:
    """isp + vpn (built once), a laptop reset per scenario, and helpers to look inside.

    Roles "lap", "isp", "vpn" (or full namespace names) select a namespace
    wherever a method takes `ns`.
    """

    def __init__(self, tag: str | None = None):
        self.tag = tag or f"lc{os.getpid()}"
        self.names = {role: f"{self.tag}-{role}" for role in ROLES}
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-lab-"))
        self.scenario: Scenario | None = None
        self.reset_seconds: list[float] = []
        self.build_seconds: float | None = None
        self.notes: list[str] = []
        self.private_wireguard_dir = False
        self.keys: dict[str, Path] = {}
        self.public_keys: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._captures: list[Capture] = []
        self._capture_files: list[Path] = []
        self._sockets: list[socket.socket] = []
        self._undo: list[Step] = []
        self._lock_fd: int | None = None
        self._built = False
        self._closed = False
        self._seq = 0

    def __repr__(self) -> str:
        return f"<Lab {self.tag} scenario={self.scenario}>"

    # ------------------------------------------------------------ names and commands

    @property
    def lap(self) -> str:
        return self.names["lap"]

    @property
    def isp(self) -> str:
        return self.names["isp"]

    @property
    def vpn(self) -> str:
        return self.names["vpn"]

    def ns_name(self, ns: str) -> str:
        return self.names.get(ns, ns)

    def exec(self, cmd: str | Sequence[str], ns: str = "lap", *, check: bool = True, timeout: float = 30.0,
             input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a command in a lab namespace (`ip netns exec`); CommandError if it fails and `check`."""
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return _run(["ip", "netns", "exec", self.ns_name(ns), *argv], check=check, timeout=timeout, input=input,
                    env=env)

    def ip(self, args: str | Sequence[str], ns: str = "lap", *, check: bool = True) -> subprocess.CompletedProcess:
        """`ip -n NS <args>`."""
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        return _run(["ip", "-n", self.ns_name(ns), *argv], check=check)

    def ip_json(self, args: str | Sequence[str], ns: str = "lap", *, check: bool = True) -> list:
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        done = _run(["ip", "-j", "-n", self.ns_name(ns), *argv], check=check)
        if done.returncode != 0 or not done.stdout.strip():
            return []
        return json.loads(done.stdout)

    def step(self, step: Step, *, tolerate: bool = False) -> None:
        """Apply one scenario step: "[ns:] command" or a callable(lab)."""
        if callable(step):
            step(self)
            return
        text = step.strip()
        ns = "lap"
        match = re.match(r"^(lap|isp|vpn)\s*:\s*(.+)$", text)
        if match:
            ns, text = match.groups()
        argv = shlex.split(text)
        if argv[0] == "ip":
            self.ip(argv[1:], ns=ns, check=not tolerate)
        else:
            self.exec(argv, ns=ns, check=not tolerate)

    def in_netns(self, ns: str):
        """Context manager: this thread inside the namespace (sockets made there stay there)."""
        return linux.in_netns(self.ns_name(ns))

    def socket(self, ns: str = "lap", family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0) -> socket.socket:
        """A socket living in a lab namespace, closed when the scenario ends."""
        with self.in_netns(ns):
            sock = socket.socket(family, type, proto)
        self._sockets.append(sock)
        return sock

    def sysctl(self, ns: str, key: str, value: object) -> None:
        with self.in_netns(ns):
            Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")

    def link_exists(self, ifname: str, ns: str = "lap") -> bool:
        if not (linux.NETNS_RUN_DIR / self.ns_name(ns)).exists():
            return False
        with self.in_netns(ns):
            try:
                socket.if_nametoindex(ifname)
            except OSError:
                return False
        return True

    # ------------------------------------------------------------ build and close

    def build(self) -> "Lab":
        """Build isp and vpn (once). LabError with the reason if this machine cannot."""
        if self._built:
            return self
        if self._closed:
            raise LabError("this lab was closed; make a new one")
        self._preflight()
        waited = time.monotonic()
        self._acquire_lock()
        started = time.monotonic()
        if started - waited > 1:
            self.notes.append(f"waited {started - waited:.1f}s for another lab to finish")
        try:
            removed = remove_stale_labs(keep_pid=os.getpid())
            if removed:
                self.notes.append(f"removed stale lab namespaces: {', '.join(removed)}")
            linux.ensure_shared_netns_dir()
            self._isolate_wireguard_dir()
            self._make_keys()
            self._build_isp()
            self._build_vpn()
            self._start_resolvers()
        except BaseException:
            self.close()
            raise
        self._built = True
        self.build_seconds = time.monotonic() - started
        return self

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veth, tun): run the tests as root "
                           "(sudo tests/run.sh)")
        missing = [tool for tool in TOOLS if not shutil.which(tool)]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} (apt-get install iproute2 wireguard-tools "
                           "wireguard-go tcpdump nftables; packaging/dev-setup.sh --test does it)")
        if not Path("/dev/net/tun").exists():
            raise LabError("/dev/net/tun is missing: wireguard-go needs the tun driver")

    def _acquire_lock(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        wait = float(os.environ.get("LEAKCHECK_LAB_LOCK_WAIT", "600"))
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = Path(LOCK_PATH).read_text().strip() or "?"
                    os.close(fd)
                    raise LabError(f"another lab (pid {holder}) held {LOCK_PATH} for {wait:.0f}s; "
                                   "one lab at a time per machine") from None
                if not told:
                    print(f"leakcheck lab: waiting for {LOCK_PATH} (another lab is running)",
                          file=sys.__stderr__, flush=True)
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _isolate_wireguard_dir(self) -> None:
        try:
            linux.private_mounts()
            self.private_wireguard_dir = True
            return
        except OSError as exc:
            self.notes.append(f"sharing the machine's /run/wireguard ({exc})")
        for ifname in ("wg0", "wgvpn"):
            path = linux.WIREGUARD_RUN_DIR / f"{ifname}.sock"
            if path.exists():
                if self._uapi_reachable(path):
                    raise LabError(f"{path} belongs to another running wireguard-go (another lab or a VPN "
                                   "on this machine); stop it first (pgrep -a wireguard-go)")
                path.unlink(missing_ok=True)

    def _make_keys(self) -> None:
        for role in ("lap", "vpn"):
            private = _run(["wg", "genkey"]).stdout.strip()
            self.public_keys[role] = _run(["wg", "pubkey"], input=private + "\n").stdout.strip()
            path = self.workdir / f"{role}.key"
            path.touch(mode=0o600)
            path.write_text(private + "\n")
            self.keys[role] = path

    def _new_netns(self, role: str) -> None:
        _run(["ip", "netns", "add", self.names[role]])
        for key in ("all", "default"):
            self.sysctl(role, f"net.ipv6.conf.{key}.accept_dad", 0)
            self.sysctl(role, f"net.ipv6.conf.{key}.accept_ra", 0)
        self.ip("link set lo up", ns=role)

    def _router(self, role: str) -> None:
        self.sysctl(role, "net.ipv4.ip_forward", 1)
        self.sysctl(role, "net.ipv6.conf.all.forwarding", 1)
        for key in ("all", "default"):
            self.sysctl(role, f"net.ipv4.conf.{key}.rp_filter", 0)

    def _build_isp(self) -> None:
        self._new_netns("isp")
        self._router("isp")
        for command in (f"-4 addr add {CANARY_V4}/32 dev lo", f"-4 addr add {ISP_RESOLVER}/32 dev lo",
                        f"-6 addr add {CANARY_V6}/128 dev lo nodad"):
            self.ip(command, ns="isp")

    def _build_vpn(self) -> None:
        self._new_netns("vpn")
        self._router("vpn")
        self.ip(f"link add wan0 type veth peer name eth0 netns {self.vpn}", ns="isp")
        for ns, commands in (
            ("isp", ["-4 addr add 203.0.113.254/24 dev wan0", "-6 addr add 2001:db8:2::254/64 dev wan0 nodad",
                     "link set wan0 up"]),
            ("vpn", [f"-4 addr add {VPN_SERVER}/24 dev eth0", f"-6 addr add {VPN_SERVER_V6}/64 dev eth0 nodad",
                     "link set eth0 up", "-4 route add default via 203.0.113.254 dev eth0",
                     "-6 route add default via 2001:db8:2::254 dev eth0"]),
            ("isp", [f"-4 route add 100.100.0.0/24 via {VPN_SERVER} dev wan0",
                     f"-6 route add fd00:100::/64 via {VPN_SERVER_V6} dev wan0"]),
        ):
            for command in commands:
                self.ip(command, ns=ns)
        self._spawn_wireguard("vpn", "wgvpn")
        self.exec(["wg", "set", "wgvpn", "private-key", str(self.keys["vpn"]), "listen-port", str(VPN_PORT),
                   "peer", self.public_keys["lap"], "allowed-ips", f"{TUNNEL_LAPTOP}/32,{TUNNEL_LAPTOP_V6}/128"],
                  ns="vpn")
        for command in (f"-4 addr add {TUNNEL_GATEWAY}/24 dev wgvpn",
                        f"-6 addr add {TUNNEL_GATEWAY_V6}/64 dev wgvpn nodad", "link set wgvpn up"):
            self.ip(command, ns="vpn")
        ruleset = """
table inet leakcheck_lab {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "eth0" ip daddr 100.100.0.0/24 drop
        iifname "eth0" ip6 daddr fd00:100::/64 drop
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname "eth0" oifname "wgvpn" ct state established,related accept
        iifname "eth0" oifname "wgvpn" drop
    }
}
"""
        self.exec(["nft", "-f", "-"], ns="vpn", input=ruleset)

    def _start_resolvers(self) -> None:
        for role, listen in (("isp", (ISP_RESOLVER, LAN_ROUTER, LAN_ROUTER_V6)),
                             ("vpn", (CORP_RESOLVER, CORP_RESOLVER_V6))):
            log = self.workdir / f"dns-{role}.log"
            log.touch()
            argv = [sys.executable, str(DNSD), "--label", role, "--log", str(log), "--a", DNS_ANSWER_V4,
                    "--aaaa", DNS_ANSWER_V6, *[f"--listen={address}" for address in listen]]
            proc = self._spawn(role, argv, f"dnsd-{role}", stdout=subprocess.PIPE)
            fd = proc.stdout.fileno()
            readable, _, _ = select.select([fd], [], [], WAIT * 2)
            line = os.read(fd, 100) if readable else b""
            if b"ready" not in line:
                proc.kill()
                raise LabError(f"dnsd in {role} did not start: {self._log_tail(f'dnsd-{role}')}")

    def close(self) -> None:
        """Tear everything down; safe to call twice, from atexit or a signal handler."""
        if self._closed:
            return
        self._closed = True
        for action in (self.end_scenario, self._destroy_laptop, self._stop_daemons, self._delete_namespaces,
                       self._restore_mounts, self._release_lock):
            try:
                action()
            except Exception as exc:  # teardown tolerates what is already gone
                self.notes.append(f"teardown {action.__name__}: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_daemons(self) -> None:
        for key in list(self._procs):
            self._stop(key)

    def _delete_namespaces(self) -> None:
        for role in ROLES:
            delete_netns(self.names[role])
        try:
            ETC_NETNS.rmdir()  # only if empty: we may have created it
        except OSError:
            pass
        if not self.private_wireguard_dir:
            for ifname in ("wg0", "wgvpn"):
                path = linux.WIREGUARD_RUN_DIR / f"{ifname}.sock"
                if path.exists() and not self._uapi_reachable(path):
                    path.unlink(missing_ok=True)

    def _restore_mounts(self) -> None:
        if self.private_wireguard_dir:
            linux.restore_mounts()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)

    def install_exit_handlers(self) -> None:
        """Close the lab at interpreter exit and on SIGTERM/SIGHUP (then die of that signal)."""
        atexit.register(self.close)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(signum)

            def handler(number: int, frame: Any, previous: Any = previous) -> None:
                self.close()
                if callable(previous):
                    previous(number, frame)
                    return
                signal.signal(number, signal.SIG_DFL)
                os.kill(os.getpid(), number)

            signal.signal(signum, handler)

    # ------------------------------------------------------------ processes

    def _spawn(self, ns: str, argv: Sequence[str], key: str, *, stdout: Any = None,
               env: dict | None = None) -> subprocess.Popen:
        log_path = self.workdir / f"{key}.log"
        environment = dict(os.environ, **(env or {}))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns_name(ns), *argv], stdin=subprocess.DEVNULL,
                                    stdout=stdout or log, stderr=log, env=environment,
                                    preexec_fn=linux.set_parent_death_signal)
        self._procs[key] = proc
        return proc

    def _stop(self, key: str, timeout: float = 3.0) -> None:
        proc = self._procs.pop(key, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def _log_tail(self, key: str) -> str:
        try:
            return (self.workdir / f"{key}.log").read_text(errors="replace")[-2000:].strip()
        except OSError:
            return ""

    # ------------------------------------------------------------ WireGuard

    @staticmethod
    def _uapi_reachable(path: Path) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(path))
            except OSError:
                return False
        return True

    def uapi(self, ifname: str, request: str = "get=1\n\n") -> str:
        """Talk to wireguard-go's UAPI socket directly (what `wg` does)."""
        path = linux.WIREGUARD_RUN_DIR / f"{ifname}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            sock.sendall(request.encode())
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode()

    def _uapi_values(self, ifname: str, key: str) -> list[str]:
        prefix = key + "="
        return [line[len(prefix):] for line in self.uapi(ifname).splitlines() if line.startswith(prefix)]

    def latest_handshake(self, ifname: str = "wg0") -> int:
        """Newest peer handshake (unix seconds), 0 if none yet."""
        return max((int(v) for v in self._uapi_values(ifname, "last_handshake_time_sec")), default=0)

    def allowed_ips(self, ifname: str = "wg0") -> list[str]:
        return self._uapi_values(ifname, "allowed_ip")

    def set_allowed_ips(self, *prefixes: str) -> None:
        self.exec(["wg", "set", "wg0", "peer", self.public_keys["vpn"], "allowed-ips", ",".join(prefixes)])

    def _spawn_wireguard(self, ns: str, ifname: str) -> None:
        proc = self._spawn(ns, ["wireguard-go", "-f", ifname], ifname, env=WG_ENV)
        path = linux.WIREGUARD_RUN_DIR / f"{ifname}.sock"

        def ready() -> bool:
            if proc.poll() is not None:
                raise LabError(f"wireguard-go {ifname} exited ({proc.returncode}): {self._log_tail(ifname)}")
            return path.exists() and self._uapi_reachable(path) and self.link_exists(ifname, ns)
        poll(ready, WAIT, f"wireguard-go {ifname} to answer on {path}")

    def start_laptop_tunnel(self) -> None:
        """wg0 in the laptop: wireguard-go peered with wgvpn (all traffic allowed), addressed, up."""
        self._spawn_wireguard("lap", "wg0")
        self.exec(["wg", "set", "wg0", "private-key", str(self.keys["lap"]), "peer", self.public_keys["vpn"],
                   "endpoint", f"{VPN_SERVER}:{VPN_PORT}", "allowed-ips", "0.0.0.0/0,::/0",
                   "persistent-keepalive", "25"])
        for command in (f"-4 addr add {TUNNEL_LAPTOP}/24 dev wg0", f"-6 addr add {TUNNEL_LAPTOP_V6}/64 dev wg0 nodad",
                        "link set wg0 up"):
            self.ip(command)

    def stop_laptop_tunnel(self) -> None:
        """Kill the laptop's wireguard-go; its wg0 (and every route through it) goes with it."""
        self._stop("wg0")
        poll(lambda: not self.link_exists("wg0"), WAIT, "wg0 to disappear")

    def wait_handshake(self, timeout: float = 8.0) -> None:
        """Until wg0 has a handshake with the gateway (one lost initiation is retried after 5 s)."""
        poll(lambda: self.latest_handshake("wg0") > 0, timeout, "a WireGuard handshake on wg0")

    # ------------------------------------------------------------ a VPN client's monitor (reconnect scenarios)

    def start_supervisor(self, mode: str, *, detect: float = 0.8, retry: float = 2.0) -> None:
        """tests/lab/supervisor.py in the laptop: pings the gateway through wg0 and, when the
        tunnel is lost, reacts as `mode` says (fail-open, give-up). Returns once it watches."""
        argv = [sys.executable, str(SUPERVISOR), "--mode", mode, "--gateway", TUNNEL_GATEWAY,
                "--detect", str(detect), "--retry", str(retry)]
        proc = self._spawn("lap", argv, "supervisor", stdout=subprocess.PIPE)
        readable, _, _ = select.select([proc.stdout.fileno()], [], [], WAIT * 2)
        line = os.read(proc.stdout.fileno(), 100) if readable else b""
        if b"ready" not in line:
            self._stop("supervisor")
            raise LabError(f"the supervisor did not start: {self._log_tail('supervisor')}")

    def stop_supervisor(self) -> None:
        self._stop("supervisor")

    def supervisor_log(self) -> str:
        return self._log_tail("supervisor")

    # ------------------------------------------------------------ the laptop

    def _create_laptop(self) -> None:
        self._new_netns("lap")
        self.ip(f"link add lan0 type veth peer name eth0 netns {self.lap}", ns="isp")
        for ns, command in (
            ("isp", f"-4 addr add {LAN_ROUTER}/24 dev lan0"), ("isp", f"-6 addr add {LAN_ROUTER_V6}/64 dev lan0 nodad"),
            ("isp", "link set lan0 up"),
            ("lap", f"-4 addr add {LAPTOP_LAN}/24 dev eth0"), ("lap", f"-6 addr add {LAPTOP_LAN_V6}/64 dev eth0 nodad"),
            ("lap", "link set eth0 up"),
            ("lap", f"-4 route add default via {LAN_ROUTER} dev eth0"),
            ("lap", f"-6 route add default via {LAN_ROUTER_V6} dev eth0"),
        ):
            self.ip(command, ns=ns)

    def _destroy_laptop(self) -> None:
        self._stop("wg0")
        if (linux.NETNS_RUN_DIR / self.isp).exists() and self.link_exists("lan0", ns="isp"):
            self.ip("link del lan0", ns="isp", check=False)
        delete_netns(self.lap)
        self.scenario = None

    def write_resolv(self, *nameservers: str) -> None:
        """/etc/netns/<lap>/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf.
        Short timeouts keep a query to an unreachable resolver from stalling the agent."""
        directory = ETC_NETNS / self.lap
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"nameserver {server}" for server in nameservers] + ["options timeout:1 attempts:1"]
        (directory / "resolv.conf").write_text("\n".join(lines) + "\n")

    def reset(self, spec: "str | Scenario | Sequence[str] | None" = None, *faults: str) -> "Lab":
        """A fresh laptop as `spec` ("style+fault+..."; default wg-quick), tunnel handshaken."""
        scenario = Scenario.parse(spec, *faults)
        if not self._built:
            raise LabError("the lab is not built (Lab.build)")
        started = time.monotonic()
        self.end_scenario()
        self._destroy_laptop()
        self._truncate_dns_logs()
        try:
            self._create_laptop()
            self.scenario = scenario
            for step in STYLES[scenario.style].steps:
                self.step(step)
            for fault in scenario.faults:
                self._undo.extend(FAULTS[fault].undo)
                for step in FAULTS[fault].steps:
                    self.step(step)
            if self.link_exists("wg0"):
                self.wait_handshake()
        except (LabError, ScenarioError, OSError) as exc:
            raise LabError(f"reset to {scenario}: {exc}") from exc
        self.reset_seconds.append(time.monotonic() - started)
        return self

    def end_scenario(self) -> None:
        """Stop captures, undo fault changes outside the laptop, close lab sockets."""
        captures, self._captures = self._captures, []
        try:
            stop_captures(captures)
        except Exception as exc:
            self.notes.append(f"capture stop: {exc}")
        undo, self._undo = self._undo, []
        for step in undo:
            try:
                self.step(step, tolerate=True)
            except Exception as exc:
                self.notes.append(f"undo {step}: {exc}")
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    # ------------------------------------------------------------ per-test bookkeeping (fixtures)

    def begin_test(self) -> None:
        self._capture_files = []

    def end_test(self, keep_in: Path | None = None) -> None:
        """End the scenario; with `keep_in`, first save state, logs and every capture of the test there."""
        if keep_in is not None:
            keep_in.mkdir(parents=True, exist_ok=True)
            try:
                (keep_in / "state.txt").write_text(self.state_dump())
            except Exception as exc:
                self.notes.append(f"state dump: {exc}")
        self.end_scenario()
        if keep_in is not None:
            for path in self._capture_files + sorted(self.workdir.glob("*.log")):
                if path.exists():
                    shutil.copy2(path, keep_in / path.name)
        for path in self._capture_files:
            path.unlink(missing_ok=True)
        self._capture_files = []

    def state_dump(self) -> str:
        """Addresses, routes, rules, policies, WireGuard and resolv.conf of every namespace, as text."""
        out = [f"scenario: {self.scenario}", f"namespaces: {self.names}"]
        commands = ["addr", "-4 route show table all", "-6 route show table all", "-4 rule", "-6 rule",
                    "xfrm policy", "neigh"]
        for role in ROLES:
            for command in commands:
                done = self.ip(command, ns=role, check=False)
                out.append(f"\n### {role}: ip {command}\n{done.stdout}{done.stderr}")
        for ifname in ("wg0", "wgvpn"):
            try:
                out.append(f"\n### uapi {ifname}\n" + re.sub(r"private_key=\w+", "private_key=(hidden)",
                                                              self.uapi(ifname)))
            except OSError as exc:
                out.append(f"\n### uapi {ifname}: {exc}")
        resolv = ETC_NETNS / self.lap / "resolv.conf"
        out.append(f"\n### lap resolv.conf\n{resolv.read_text() if resolv.exists() else '(none)'}")
        return "\n".join(out)

    # ------------------------------------------------------------ observing

    def capture(self, ns: str, iface: str, bpf: str = "", *, start: bool = True) -> Capture:
        """Start tcpdump -w on `iface` in `ns` (returns once it listens); a context manager.
        With start=False it is only launched: call wait_ready() before relying on it.
        Files of a failed test are kept under tests/lab/captures/ by the `lab` fixture."""
        self._seq += 1
        path = self.workdir / f"{self._seq:03d}-{self.ns_name(ns)}-{iface}.pcap"
        capture = Capture(self, ns, iface, bpf, path)
        if start:
            capture.start()
        else:
            capture.launch()
        self._captures.append(capture)
        self._capture_files.append(path)
        return capture

    def xfrm_held(self) -> int:
        """How many outbound packets the laptop's IPsec policies held (no state) so far."""
        with self.in_netns("lap"):
            try:
                text = Path("/proc/thread-self/net/xfrm_stat").read_text()
            except OSError:
                return 0
        counters = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return sum(int(counters.get(key, 0)) for key in ("XfrmOutNoStates", "XfrmOutPolBlock"))

    def trace_udp(self, dst: str, port: int | None = None, *, timeout: float = 2.0,
                  src_ns: str = "lap") -> UdpTrace:
        """Send one UDP datagram from the laptop to `dst` and report where it went.

        Captures the laptop's eth0, the gateway's wgvpn and the isp's wan0; if
        `dst` is an isp address (the canaries, the ISP resolver) a socket there
        records whether and from which source it arrived. Waits until it
        arrives, is seen, or the laptop's xfrm counters show it held back
        (or `timeout`), then syncs every capture."""
        address = ipaddress.ip_address(dst)
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        port = port or random.randint(20000, 59999)
        token = f"leakcheck-lab-probe-{os.urandom(6).hex()}".encode()
        listener = None
        if address in ISP_LOCAL:
            listener = self.socket("isp", family)
            listener.bind((dst, port))
            listener.setblocking(False)
        wanted = {"lan": ("lap", "eth0", "ip or ip6"), "tunnel": ("vpn", "wgvpn", f"udp port {port}"),
                  "wan": ("isp", "wan0", f"udp port {port}")}
        if not self.link_exists("wgvpn", ns="vpn"):
            del wanted["tunnel"]
        captures = {key: self.capture(*args, start=False) for key, args in wanted.items()}
        for capture in captures.values():
            capture.wait_ready()
        held_before = self.xfrm_held()
        sender = self.socket(src_ns, family)
        send_error = None
        try:
            sender.sendto(token, (dst, port))
        except OSError as exc:
            send_error = exc.strerror or str(exc)
        arrived_from = None
        held = False
        deadline = time.monotonic() + timeout
        while send_error is None and time.monotonic() < deadline:
            if listener is not None:
                try:
                    data, peer = listener.recvfrom(65535)
                    if data == token:
                        arrived_from = peer[0]
                        break
                except BlockingIOError:
                    pass
            if self.xfrm_held() > held_before:
                held = True
                break
            if listener is None and any(token in p.payload for key in ("lan", "tunnel") if key in captures
                                        for p in captures[key].packets()):
                break
            time.sleep(0.002)
        # Everything sent before this point is in the files, or never went out.
        stop_captures(list(captures.values()), strict=True)
        packets = {key: capture.packets() for key, capture in captures.items()}
        return UdpTrace(dst=dst, port=port, token=token, send_error=send_error, arrived_from=arrived_from,
                        held_back=held, lan=[p for p in packets["lan"] if p.version],
                        tunnel=[p for p in packets.get("tunnel", []) if p.is_udp and token in p.payload],
                        wan=[p for p in packets["wan"] if p.is_udp and token in p.payload],
                        pcaps={key: capture.path for key, capture in captures.items()})

    # ------------------------------------------------------------ DNS

    def dns_query(self, server: str, name: str, qtype: str = "A", *, ns: str = "lap",
                  timeout: float = 1.0) -> list[str] | None:
        """Ask `server` directly from a lab namespace: the answer addresses, None if no reply."""
        family = socket.AF_INET6 if ipaddress.ip_address(server).version == 6 else socket.AF_INET
        sock = self.socket(ns, family)
        try:
            return dnsd.query(sock, server, name, qtype, timeout)
        except OSError:
            return None
        finally:
            sock.close()

    def dns_log(self, role: str) -> list[dict]:
        """Queries the isp's or the vpn's dnsd received since the last reset (oldest first)."""
        path = self.workdir / f"dns-{role}.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _truncate_dns_logs(self) -> None:
        for role in ("isp", "vpn"):
            path = self.workdir / f"dns-{role}.log"
            if path.exists():
                os.truncate(path, 0)

    # ------------------------------------------------------------ the agent

    def agent(self, *argv: str, timeout: float = 120.0, env: dict | None = None) -> LabRun:
        """`python -m leakcheck ARGV...` inside the laptop (repo root as cwd and on PYTHONPATH)."""
        return self._run_agent([sys.executable, "-m", "leakcheck", *argv], timeout=timeout, env=env)

    def run_cli(self, *args: str, config: dict | None = None, timeout: float = 120.0,
                env: dict | None = None) -> LabRun:
        """`leakcheck run --json --config <LAB_CONFIG merged with config> ARGS...` inside the laptop."""
        merged = merge_config(LAB_CONFIG, config)
        self._seq += 1
        path = self.workdir / f"config-{self._seq:03d}.toml"
        path.write_text(to_toml(merged))
        run = self._run_agent([sys.executable, "-m", "leakcheck", "run", "--json", "--config", str(path), *args],
                              timeout=timeout, env=env)
        run.config, run.config_path = merged, path
        return run

    def _run_agent(self, argv: list[str], *, timeout: float, env: dict | None) -> LabRun:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), environment.get("PYTHONPATH"))))
        environment.update(env or {})
        started = time.monotonic()
        proc = subprocess.Popen(["ip", "netns", "exec", self.lap, *argv], cwd=REPO_ROOT, env=environment,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=linux.set_parent_death_signal)
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        try:
            report = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            report = None
        return LabRun(argv=argv, returncode=None if timed_out else proc.returncode, stdout=stdout, stderr=stderr,
                      report=report, seconds=time.monotonic() - started, timed_out=timed_out)

    # ------------------------------------------------------------ per-app and tethering (perapp, tethering probes)

    def start_lap_process(self, key: str, argv: Sequence[str], *, uid: int | None = None,
                          ready: bytes | None = None) -> subprocess.Popen:
        """A background process in the laptop (as `uid` when given); with `ready`, returns
        once it printed that. It dies with the laptop namespace at the next reset."""
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        proc = self._spawn("lap", list(argv), key, stdout=subprocess.PIPE if ready else None)
        if ready:
            readable, _, _ = select.select([proc.stdout.fileno()], [], [], WAIT)
            line = os.read(proc.stdout.fileno(), 200) if readable else b""
            if ready not in line:
                self._stop(key)
                raise LabError(f"{key} did not start: {line!r} {self._log_tail(key)}")
        elif proc.poll() is not None:
            raise LabError(f"{key} exited at once: {self._log_tail(key)}")
        return proc

    def start_bound_socket(self, device: str, dst: str = CANARY_V4, port: int = 9) -> subprocess.Popen:
        """A python process in the laptop with a UDP socket bound to `device` (SO_BINDTODEVICE),
        connected to dst:port (one datagram sent), then sleeping: an app that skips routing."""
        code = ("import socket, sys, time\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, {device.encode()!r})\n"
                f"s.connect(({dst!r}, {port}))\n"
                "s.send(b'bound-socket')\n"
                "print('ready', flush=True)\n"
                "time.sleep(600)\n")
        return self.start_lap_process(f"bound-{device}", [sys.executable, "-c", code], ready=b"ready")

    @property
    def tether_client(self) -> str:
        """Namespace of a tethered client (see add_tethered_client)."""
        return f"{self.tag}-tcl"

    def add_tethered_client(self, ifname: str = "usb0", client: str = "192.168.42.2",
                            gateway: str = "192.168.42.1", prefixlen: int = 24) -> None:
        """A tethered device: namespace <tag>-tcl whose eth0 (client/prefixlen, default via
        gateway) is the peer of the laptop's `ifname` (gateway/prefixlen), like USB tethering."""
        self._remove_stale_clients()
        self.remove_tethered_client()
        _run(["ip", "netns", "add", self.tether_client])
        self.ip("link set lo up", ns=self.tether_client)
        self.ip(f"link add {ifname} type veth peer name eth0 netns {self.tether_client}")
        self.ip(f"-4 addr add {gateway}/{prefixlen} dev {ifname}")
        self.ip(f"link set {ifname} up")
        self.ip(f"-4 addr add {client}/{prefixlen} dev eth0", ns=self.tether_client)
        self.ip("link set eth0 up", ns=self.tether_client)
        self.ip(f"-4 route add default via {gateway} dev eth0", ns=self.tether_client)

    def remove_tethered_client(self) -> None:
        delete_netns(self.tether_client)

    @staticmethod
    def _remove_stale_clients() -> None:
        """Client namespaces of labs whose process is gone (they are not lap/isp/vpn, so
        remove_stale_labs leaves them)."""
        if not linux.NETNS_RUN_DIR.is_dir():
            return
        for name in os.listdir(linux.NETNS_RUN_DIR):
            match = re.match(r"^lc(\d+)-tcl$", name)
            if match and not linux.pid_alive(int(match.group(1))):
                delete_netns(name)
