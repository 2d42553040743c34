"""Benchmark: wall time and peak RSS of `leakcheck run --json` in the lab.

Builds the lab (isp, vpn gateway, laptop with a correct wg-quick tunnel),
then runs the real CLI inside the laptop namespace N times, with and
without active checks (--passive), and prints median/max wall time and the
peak RSS of each run (from wait4). Run as root:

    .venv/bin/python tests/bench/bench_run.py [--runs 10] [--scenario wg-quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.lab import LAB_CONFIG  # noqa: E402
from tests.lab import linux  # noqa: E402
from tests.lab.topology import Lab, to_toml  # noqa: E402


def one_run(lab: Lab, config_path: Path, extra: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit status) of one CLI run in the laptop."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = ["ip", "netns", "exec", lab.lap, sys.executable, "-m", "leakcheck", "run", "--json",
            "--config", str(config_path), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def report(label: str, runs: list[tuple[float, float, int]]) -> None:
    walls = [w for w, _, _ in runs]
    rss = [r for _, r, _ in runs]
    codes = sorted({c for _, _, c in runs})
    print(f"{label:<28} wall median {statistics.median(walls) * 1000:6.0f} ms  max {max(walls) * 1000:6.0f} ms"
          f"   peak RSS median {statistics.median(rss):5.1f} MB  max {max(rss):5.1f} MB   exit {codes}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scenario", default="wg-quick")
    args = parser.parse_args()
    linux.private_mounts()
    lab = Lab()
    try:
        lab.build()
        lab.reset(args.scenario)
        config_path = lab.workdir / "bench.toml"
        config_path.write_text(to_toml(LAB_CONFIG))
        one_run(lab, config_path, ["--passive"])  # warm the page cache
        print(f"scenario {args.scenario}, {args.runs} runs each")
        report("passive (no test packets)", [one_run(lab, config_path, ["--passive"]) for _ in range(args.runs)])
        report("with active checks", [one_run(lab, config_path, []) for _ in range(args.runs)])
    finally:
        lab.close()


if __name__ == "__main__":
    main()
