"""Agent benchmarks (a script, not a test): idle RSS and CPU, and the delay
from a route change to the start of the triggered run: to the agent starting
its worker process (logged), and to the run's own `started_at` in the
spooled report (the worker's start-up included).

    python tests/bench/bench_agent.py [--idle-seconds 600]

The agent runs in a throw-away network namespace (no collector configured:
reports stay in its spool), interval 1 h, so after its first run it idles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def proc_stats(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return rss, cpu


def newest_report(spool: Path) -> dict:
    return json.loads(sorted(spool.glob("*.json"))[-1].read_text())


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def agent_pid(wrapper: subprocess.Popen) -> int:
    # `ip netns exec` execs the command, so the pid is the agent's.
    return wrapper.pid


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-seconds", type=float, default=600)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    ns = f"lcbench-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="lcbench-"))
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.2/24", "dev", "lo")
        (tmp / "agent.toml").write_text(f"""
[canaries]
ipv4 = ["203.0.113.10"]
ipv6 = ["2001:db8::10"]
[agent]
interval = "1h"
jitter = "0s"
state_dir = "{tmp / 'state'}"
""")
        log = tmp / "agent.log"
        agent = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "leakcheck", "agent",
                                  "--config", str(tmp / "agent.toml")], cwd=ROOT, stderr=open(log, "wb"))
        while "run: verdict=" not in log.read_text():
            time.sleep(0.1)
        time.sleep(2)
        pid = agent_pid(agent)

        delays, starts = [], []
        spool = tmp / "state" / "spool"
        for i in range(args.changes):
            before = log.read_text().count("run: verdict=")
            changed, changed_wall = time.monotonic(), time.time()
            sh("ip", "-n", ns, "route", "add", f"198.51.100.{i}/32", "dev", "lo")
            while "run: trigger=network-change" not in log.read_text().split("run: verdict=")[-1]:
                time.sleep(0.005)
            delays.append(time.monotonic() - changed)
            while log.read_text().count("run: verdict=") == before:
                time.sleep(0.05)
            report = newest_report(spool)
            assert report["trigger"] == "network-change", report["trigger"]
            starts.append(epoch(report["started_at"]) - changed_wall)
            time.sleep(1)
        logged = [int(x) for x in re.findall(r"trigger=network-change delay_ms=(\d+)", log.read_text())]
        median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        print(f"route change -> worker started: max {max(delays)*1000:.0f} ms, "
              f"median {median(delays)*1000:.0f} ms over {len(delays)} changes "
              f"(agent-logged settle delay max {max(logged)} ms)")
        print(f"route change -> report started_at: max {max(starts)*1000:.0f} ms, "
              f"median {median(starts)*1000:.0f} ms")

        time.sleep(2)
        rss0, cpu0 = proc_stats(pid)
        start = time.monotonic()
        peak = rss0
        while time.monotonic() - start < args.idle_seconds:
            time.sleep(5)
            peak = max(peak, proc_stats(pid)[0])
        rss1, cpu1 = proc_stats(pid)
        elapsed = time.monotonic() - start
        print(f"idle over {elapsed:.0f} s: RSS {rss1 / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB), "
              f"CPU {100 * (cpu1 - cpu0) / elapsed:.4f} % ({cpu1 - cpu0:.2f} s), "
              f"child processes while idle: {len(children(pid))}")
        agent.send_signal(signal.SIGTERM)
        print(f"SIGTERM -> exit status {agent.wait(10)}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
