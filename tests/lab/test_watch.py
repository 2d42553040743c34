"""The live leak watch (`leakcheck watch --json`) in the lab's laptop, with real packets.

One laptop (wg-quick full tunnel, allowed exception 198.51.100.200/32) and one
watcher process for the whole module; each test sends one kind of traffic
from a real process and reads the watcher's JSON lines. Leaks must be
reported with the right process/uid within 1 s of the first packet (the
clock starts before the sending process is even spawned); twins must
report nothing. The last test kills a watcher with SIGKILL and compares
the laptop's whole ruleset before and after.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.lab import CANARY_V4, ISP_RESOLVER, LAN_ROUTER, LAN_ROUTER_V6, VPN_SERVER
from tests.lab.topology import REPO_ROOT, merge_config, poll, to_toml
from tests.lab import LAB_CONFIG, linux

pytestmark = pytest.mark.lab

ALLOWED = "198.51.100.200"
WITHIN = 1.0  # seconds from the first packet to the finding
QUIET = 1.5  # how long a twin must stay silent
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by uid 1234 (the venv under /root is not)


class Watcher:
    """`leakcheck watch --json` in the laptop; its findings arrive on a queue."""

    def __init__(self, lab, config_path, argv=None):
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        argv = argv or [sys.executable, "-m", "leakcheck", "watch", "--json", "--config", str(config_path)]
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.lap, *argv], cwd=REPO_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=linux.set_parent_death_signal)
        self.lines: "queue.Queue[tuple[float, dict]]" = queue.Queue()
        self.stderr: list[str] = []
        self.all: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        poll(lambda: any("watching" in line for line in self.stderr) or self.proc.poll() is not None, 10,
             "the watcher to start")
        assert self.proc.poll() is None, f"watcher exited: {''.join(self.stderr)}"

    def _read(self):
        for line in self.proc.stdout:
            finding = json.loads(line)
            self.all.append(finding)
            self.lines.put((time.monotonic(), finding))

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self.lines.get_nowait()[1])
            except queue.Empty:
                return out

    def expect(self, predicate, since: float, within: float = WITHIN) -> tuple[dict, float]:
        """The first finding matching predicate, and its delay after `since`."""
        deadline = since + within + 2.0  # wait a little longer to tell "late" from "never"
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching finding; saw {seen}; watcher: {''.join(self.stderr)}")
            try:
                at, finding = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(finding)
            if predicate(finding):
                return finding, at - since

    def quiet(self, seconds: float = QUIET) -> list[dict]:
        time.sleep(seconds)
        return self.drain()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def sender(lab, key, code, *, uid=None, python=sys.executable):
    """A real process in the laptop that runs `code` (which sends), prints ready, then sleeps."""
    script = "import socket, struct, time\n" + code + "\nprint('ready', flush=True)\ntime.sleep(60)\n"
    return lab.start_lap_process(key, [python, "-c", script], uid=uid, ready=b"ready")


def udp_code(dst, port, *, device=None, mark=None, family="AF_INET", broadcast=False, sport=None):
    lines = [f"s = socket.socket(socket.{family}, socket.SOCK_DGRAM)"]
    if device:
        lines.append(f"s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, {device.encode()!r})")
    if mark:
        lines.append(f"s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, {mark})")
    if broadcast:
        lines.append("s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)")
    if sport:
        lines.append(f"s.bind(('', {sport}))")
    lines.append(f"s.sendto(b'leakcheck-watch', ({dst!r}, {port}))")
    return "\n".join(lines)


def dns_query_code(server, name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = b"\x42\x42\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x01\x00\x01"
    return f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto({query!r}, ({server!r}, 53))"


@pytest.fixture(scope="module")
def watched(lab_session):
    lab = lab_session
    lab.begin_test()
    lab.reset("wg-quick")
    config = merge_config(LAB_CONFIG, {"policy": {"allowed_direct": [f"{ALLOWED}/32"]}})
    path = lab.workdir / "watch-config.toml"
    path.write_text(to_toml(config))
    watcher = Watcher(lab, path)
    yield lab, watcher
    watcher.stop()
    lab.end_test()


def _stop(lab, key):
    lab._stop(key)


# -- leaks ------------------------------------------------------------------------------

def test_socket_bound_to_the_physical_interface_is_reported_with_its_process(watched):
    lab, watcher = watched
    watcher.drain()
    t0 = time.monotonic()
    proc = sender(lab, "w-bound", udp_code(CANARY_V4, 9, device="eth0"))
    try:
        found, delay = watcher.expect(lambda f: f["evidence"]["dst"] == CANARY_V4 and f["evidence"]["dport"] == 9, t0)
    finally:
        _stop(lab, "w-bound")
    ev = found["evidence"]
    assert found["id"] == "watch.flow-outside-tunnel" and found["severity"] == "high"
    assert delay < WITHIN, delay
    assert ev["proto"] == "udp" and ev["interface"] == "eth0" and ev["uid"] == 0
    # `ip netns exec` execs python in the same process: the Popen pid is the sender's
    assert ev["pid"] == proc.pid and ev["command"].startswith("python"), ev
    assert ev["exe"] and ev["count"] == 1 and ev["dns_name"] is None
    assert found["recommendation"] and found["guidance"].startswith("NCSC")


def test_uid_excluded_by_a_policy_rule_is_reported_with_its_uid(watched):
    lab, watcher = watched
    lab.ip("-4 rule add uidrange 1234-1234 lookup main priority 100")
    watcher.quiet(0.8)  # the rule is a network change: let the watcher rebuild first
    try:
        t0 = time.monotonic()
        proc = sender(lab, "w-uid", udp_code(CANARY_V4, 10), uid=1234, python=SYSTEM_PYTHON)
        found, delay = watcher.expect(lambda f: f["evidence"]["dport"] == 10, t0)
    finally:
        _stop(lab, "w-uid")
        lab.ip("-4 rule del uidrange 1234-1234 lookup main priority 100")
    ev = found["evidence"]
    assert delay < WITHIN, delay
    assert ev["uid"] == 1234 and ev["gid"] == 1234 and ev["interface"] == "eth0"
    assert ev["pid"] == proc.pid and ev["exe"] == os.path.realpath(SYSTEM_PYTHON), ev


def test_fwmark_bypass_is_reported(watched):
    lab, watcher = watched
    lab.ip("-4 rule add fwmark 0x1234 lookup main priority 90")
    watcher.quiet(0.8)
    try:
        t0 = time.monotonic()
        proc = sender(lab, "w-mark", udp_code(CANARY_V4, 11, mark=0x1234))
        found, delay = watcher.expect(lambda f: f["evidence"]["dport"] == 11, t0)
    finally:
        _stop(lab, "w-mark")
        lab.ip("-4 rule del fwmark 0x1234 lookup main priority 90")
    assert delay < WITHIN, delay
    assert found["evidence"]["interface"] == "eth0" and found["evidence"]["pid"] == proc.pid


def test_dns_query_to_an_outside_resolver_carries_the_name(watched):
    lab, watcher = watched
    # a per-link resolver route in main (wg-quick's suppress_prefixlength rule lets it win)
    lab.ip(f"-4 route add {ISP_RESOLVER}/32 via {LAN_ROUTER} dev eth0")
    watcher.quiet(0.8)
    try:
        t0 = time.monotonic()
        proc = sender(lab, "w-dns", dns_query_code(ISP_RESOLVER, "watch-leak.example"))
        found, delay = watcher.expect(lambda f: f["evidence"]["dst"] == ISP_RESOLVER, t0)
    finally:
        _stop(lab, "w-dns")
        lab.ip(f"-4 route del {ISP_RESOLVER}/32 via {LAN_ROUTER} dev eth0")
    assert delay < WITHIN, delay
    assert found["id"] == "watch.dns-outside-tunnel"
    ev = found["evidence"]
    assert ev["dns_name"] == "watch-leak.example" and ev["dport"] == 53 and ev["pid"] == proc.pid
    assert "watch-leak.example" in found["summary"]


def test_connection_opened_before_the_tunnel_is_reported_when_it_comes_up(watched):
    lab, watcher = watched
    port = 8443
    listener = ("import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                f"s.bind(({CANARY_V4!r}, {port}))\ns.listen()\nprint('ready', flush=True)\n"
                "c, _ = s.accept()\ntime.sleep(60)\n")
    lab._spawn("isp", [sys.executable, "-u", "-c", listener], "w-listener", stdout=subprocess.PIPE)
    time.sleep(0.3)
    lab.stop_laptop_tunnel()
    try:
        proc = sender(lab, "w-early", f"s = socket.create_connection(({CANARY_V4!r}, {port}), timeout=3)")
        lab.start_laptop_tunnel()
        t0 = time.monotonic()
        lab.exec(["wg", "set", "wg0", "fwmark", "51820"])
        lab.ip("-4 route add default dev wg0 table 51820")
        lab.ip("-6 route add default dev wg0 table 51820")
        lab.wait_handshake()
        found, delay = watcher.expect(lambda f: f["id"] == "watch.flow-predates-tunnel"
                                          and f["evidence"]["dport"] == port, t0, within=4.0)
    finally:
        _stop(lab, "w-early")
        _stop(lab, "w-listener")
    ev = found["evidence"]
    assert ev["dst"] == CANARY_V4 and ev["dport"] == port and ev["proto"] == "tcp" and ev["interface"] == "eth0"
    assert ev["pid"] == proc.pid, ev
    # the VPN client's own new packets (wireguard-go to the server, a new socket) were not reported
    assert not [f for f in watcher.all if f["evidence"]["dst"] == VPN_SERVER]


def test_tethered_client_forwarded_out_of_the_lan_is_reported(watched):
    lab, watcher = watched
    steps = [f"ip -4 route add default via {LAN_ROUTER} dev eth0 table 42",
             "ip -4 rule add iif usb0 lookup 42 priority 100"]
    lab.add_tethered_client()
    try:
        for step in steps:
            lab.step(step)
        lab.sysctl("lap", "net.ipv4.ip_forward", 1)
        watcher.quiet(0.8)
        t0 = time.monotonic()
        lab.exec([sys.executable, "-c", "import socket\n" + udp_code(CANARY_V4, 14)], ns=lab.tether_client)
        found, delay = watcher.expect(lambda f: f["evidence"]["dport"] == 14, t0)
    finally:
        lab.remove_tethered_client()
        lab.ip("-4 rule del iif usb0 lookup 42 priority 100", check=False)
        lab.sysctl("lap", "net.ipv4.ip_forward", 0)
    ev = found["evidence"]
    assert delay < WITHIN
    assert ev["src"] == "192.168.42.2" and ev["interface"] == "eth0" and ev["pid"] is None and ev["uid"] is None
    assert "forwarded client" in found["summary"]


# -- twins: nothing to report -----------------------------------------------------------

def test_lan_link_local_dhcp_and_nd_report_nothing(watched):
    lab, watcher = watched
    watcher.quiet(1.0)
    code = "\n".join([
        udp_code(LAN_ROUTER, 9, device="eth0"),
        udp_code(LAN_ROUTER_V6, 9, device="eth0", family="AF_INET6"),
        udp_code("169.254.1.1", 9, device="eth0"),
        udp_code("255.255.255.255", 67, device="eth0", broadcast=True, sport=68),
    ])
    # all-nodes multicast on the link (what ND, mDNS and SSDP look like); the v6 LAN send does ND
    code += ("\nm = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
             "m.sendto(b'x', ('ff02::1', 9, 0, socket.if_nametoindex('eth0')))")
    sender(lab, "w-lan", code)
    try:
        assert watcher.quiet() == []
    finally:
        _stop(lab, "w-lan")


def test_allowed_exception_and_socket_bound_to_the_tunnel_report_nothing(watched):
    lab, watcher = watched
    watcher.drain()
    sender(lab, "w-allowed", udp_code(ALLOWED, 9, device="eth0") + "\n" + udp_code(CANARY_V4, 12, device="wg0"))
    try:
        assert watcher.quiet() == []
    finally:
        _stop(lab, "w-allowed")


def test_busy_full_tunnel_reports_nothing(watched):
    lab, watcher = watched
    watcher.drain()
    code = ("for port in range(20000, 20500):\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"    s.sendto(b'x', ({CANARY_V4!r}, port))\n"
            "    s.close()\n")
    sender(lab, "w-busy", code)
    # DNS to the ISP resolver through wg0 (the vpn's egress NAT), answered
    # (asked again if the burst above costs the first query its packet)
    poll(lambda: lab.dns_query(ISP_RESOLVER, "busy.example") == [CANARY_V4], 5, "an answer through the tunnel")
    try:
        assert watcher.quiet() == []
    finally:
        _stop(lab, "w-busy")


# -- the API the agent runs in a thread, beside a helpdesk watch --------------------------

API_SCRIPT = """
import json, sys, threading
from leakcheck.config import load
from leakcheck.watch.engine import Watch
watch = Watch(load(sys.argv[1]), on_flow=lambda record, first: print(json.dumps(record.to_dict()), flush=True))
watch.start()
print("watching " + watch.watching[0], file=sys.stderr, flush=True)
stop = threading.Event()
thread = threading.Thread(target=watch.run, args=(stop,))
thread.start()
sys.stdin.readline()  # the test closes stdin: the agent sets its stop event
stop.set()
thread.join(5)
print("stopped" if not thread.is_alive() else "still running", file=sys.stderr, flush=True)
"""


def test_watch_api_in_a_thread_runs_beside_the_cli_watch_and_both_see_the_leak(watched):
    lab, watcher = watched
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    agent = Watcher.__new__(Watcher)
    agent.proc = subprocess.Popen(["ip", "netns", "exec", lab.lap, sys.executable, "-c", API_SCRIPT,
                                   str(lab.workdir / "watch-config.toml")], cwd=REPO_ROOT, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True, preexec_fn=linux.set_parent_death_signal)
    agent.lines, agent.stderr, agent.all = queue.Queue(), [], []
    threading.Thread(target=agent._read, daemon=True).start()
    threading.Thread(target=agent._read_err, daemon=True).start()
    poll(lambda: any("watching" in line for line in agent.stderr) or agent.proc.poll() is not None, 10,
         "the API watch to start")
    assert agent.proc.poll() is None, "".join(agent.stderr)
    tables = lab.exec(["nft", "list", "tables"]).stdout
    assert tables.count("leakcheck_watch_") == 2, tables  # one each, neither in the other's way
    watcher.drain()
    t0 = time.monotonic()
    try:
        sender(lab, "w-api", udp_code(CANARY_V4, 13, device="eth0"))
        for seen in (agent, watcher):
            found, delay = seen.expect(lambda f: f["evidence"]["dport"] == 13, t0)
            assert delay < WITHIN and found["id"] == "watch.flow-outside-tunnel"
    finally:
        _stop(lab, "w-api")
        agent.proc.stdin.close()
        agent.proc.wait(10)
    assert "stopped" in "".join(agent.stderr)
    assert lab.exec(["nft", "list", "tables"]).stdout.count("leakcheck_watch_") == 1


# -- the table is the watcher's alone -------------------------------------------------

def test_table_is_gone_after_sigkill_and_nothing_else_changed(watched):
    lab, watcher = watched
    watcher.stop()  # the module's watcher removes its table on the way out (SIGINT)
    poll(lambda: "leakcheck_watch" not in lab.exec(["nft", "list", "tables"]).stdout, 5, "the table to go")
    before = json.loads(lab.exec(["nft", "-j", "list", "ruleset"]).stdout)
    second = Watcher(lab, lab.workdir / "watch-config.toml")
    assert "leakcheck_watch" in lab.exec(["nft", "list", "tables"]).stdout
    os.killpg(second.proc.pid, signal.SIGKILL)
    second.proc.wait(5)
    poll(lambda: "leakcheck_watch" not in lab.exec(["nft", "list", "tables"]).stdout, 5,
         "the kernel to delete the owned table")
    after = json.loads(lab.exec(["nft", "-j", "list", "ruleset"]).stdout)
    assert after == before
