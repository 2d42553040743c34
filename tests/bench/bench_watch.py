"""Live watch benchmark (a script, not a test): the watcher's CPU while the
laptop opens many connections through the tunnel and while suspect flows
leave outside it, and its idle RSS. As root:

    python tests/bench/bench_watch.py [--runs 3] [--seconds 5]

The lab (tests/lab/topology.py, wg-quick full tunnel) runs `leakcheck watch
--json` in the laptop namespace; a load process in the same namespace
opens new UDP "connections" (a new socket and conntrack entry each) at a
fixed rate. CPU is the watcher's utime+stime from /proc/PID/stat over the
window, as a share of one core; medians over --runs windows. Floors in the
same run: the watcher's CPU over an idle window (no load), and the RSS of a
bare interpreter importing nothing. The per-second limit is checked by
counting the findings printed against the logged-packet budget
(rate x seconds + burst).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.common import cache_note, median, python_env  # noqa: E402
from tests.lab import CANARY_V4, LAB_CONFIG  # noqa: E402
from tests.lab.topology import Lab, merge_config, to_toml  # noqa: E402
from leakcheck.linux.nftwatch import DEFAULT_RATE  # noqa: E402

LOAD = """
import socket, sys, time
rate, seconds, device, base = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
start = time.monotonic()
sent = 0
while True:
    now = time.monotonic() - start
    if now >= seconds:
        break
    due = int(now * rate)
    while sent < due:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if device != "-":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        s.sendto(b"x", (sys.argv[5], base + sent % 20000))
        s.close()
        sent += 1
    time.sleep(0.001)
print(sent)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watcher:
    def __init__(self, lab: Lab, config: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.lap, sys.executable, "-m", "leakcheck", "watch",
                                      "--json", "--config", str(config)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.findings = 0
        self.ready = threading.Event()
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()
        if not self.ready.wait(20):
            raise SystemExit("the watcher did not start")

    def _out(self) -> None:
        for line in self.proc.stdout:
            json.loads(line)
            self.findings += 1

    def _err(self) -> None:
        for line in self.proc.stderr:
            if "watching" in line:
                self.ready.set()
            elif "cannot" in line or "error" in line:
                print(f"  watcher: {line.rstrip()}", file=sys.stderr)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)


def window(lab: Lab, watcher: Watcher, seconds: float, rate: int, device: str, base: int) -> tuple[float, int, int]:
    """(CPU share of one core, connections sent, findings printed) over one load window."""
    before_findings = watcher.findings
    before = cpu_seconds(watcher.proc.pid)
    started = time.monotonic()
    if rate:
        done = lab.exec([sys.executable, "-c", LOAD, str(rate), str(seconds), device, str(base), CANARY_V4],
                        timeout=seconds + 30)
        sent = int(done.stdout.strip())
    else:
        time.sleep(seconds)
        sent = 0
    time.sleep(0.5)  # the last logged packets are read
    elapsed = time.monotonic() - started
    share = (cpu_seconds(watcher.proc.pid) - before) / elapsed
    return share, sent, watcher.findings - before_findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    env = python_env(cold=False)
    lab = Lab()
    lab.install_exit_handlers()
    try:
        lab.build()
        lab.reset("wg-quick")
        config = lab.workdir / "bench-watch.toml"
        config.write_text(to_toml(merge_config(LAB_CONFIG, {})))
        Watcher(lab, config, env).stop()  # warms the bytecode cache; not counted
        watcher = Watcher(lab, config, env)
        time.sleep(3)
        idle_rss = rss_mb(watcher.proc.pid)
        floor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"], env=env)
        time.sleep(1)
        floor_rss = rss_mb(floor.pid)
        floor.wait()
        idle, tunnel, outside = [], [], []
        for run in range(args.runs):
            idle.append(window(lab, watcher, args.seconds, 0, "-", 0))
            tunnel.append(window(lab, watcher, args.seconds, 2000, "-", 20000))
            # distinct destination ports per run: each flow is a new record, none deduplicated away
            outside.append(window(lab, watcher, args.seconds, 200, "eth0", 1000 + run * 2000))
        watcher.stop()
    finally:
        lab.close()
    budget = DEFAULT_RATE * (args.seconds + 0.5) + DEFAULT_RATE  # rate x window + burst
    print(cache_note(False))
    print(f"runs: {args.runs} x {args.seconds:g} s windows; medians")
    print(f"idle RSS: {idle_rss:.1f} MB (floor: bare interpreter {floor_rss:.1f} MB; target < 30 MB)")
    print(f"CPU idle (floor): {100 * median([w[0] for w in idle]):.2f}% of one core")
    print(f"CPU, 2,000 new connections/s through the tunnel: {100 * median([w[0] for w in tunnel]):.2f}% "
          f"(sent {median([w[1] for w in tunnel]):.0f} per window, findings {max(w[2] for w in tunnel)}; "
          f"target < 1%)")
    print(f"CPU, 200 suspect flows/s outside: {100 * median([w[0] for w in outside]):.2f}% "
          f"(sent {median([w[1] for w in outside]):.0f} per window; findings per window "
          f"{[w[2] for w in outside]}, limit budget {budget:.0f}; target < 5%)")
    held = all(w[2] <= budget for w in outside)
    print(f"per-second limit ({DEFAULT_RATE}/s) held: {held}")
    return 0 if held else 1


if __name__ == "__main__":
    raise SystemExit(main())
