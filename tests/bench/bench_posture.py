"""Benchmark: what the posture probes add to a passive `leakcheck run`.

Builds the lab (laptop with a correct wg-quick tunnel and the kill switch,
so posture-forced evaluates a real firewall), then runs the real CLI inside
the laptop namespace, passive, N times each in rotation: the floor
(`python -c "import pyroute2, psutil"`), every probe but the posture ones
(`--probe` for each), and every probe. It prints medians of each, the
added wall time (median of the per-round differences: all minus
without-posture) and the median in-process time the posture probes report
(their duration_ms, which includes reading the posture facts once).

    .venv/bin/python tests/bench/bench_posture.py [--runs 15] [--cold]

Target (issue 12): the posture checks add at most 0.1 s to a passive run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_run import run_argv  # noqa: E402
from tests.bench.common import cache_note, floor_argv, median, python_env, timed_process  # noqa: E402
from tests.lab import LAB_CONFIG  # noqa: E402
from tests.lab import linux  # noqa: E402
from tests.lab.topology import Lab, to_toml  # noqa: E402


def probe_names() -> list[str]:
    from leakcheck.registry import discover
    return list(discover())


def posture_ms(lab: Lab, argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    report = json.loads(done.stdout)
    return sum(p["duration_ms"] for p in report["probes"] if p["probe"].startswith("posture-"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--scenario", default="wg-quick+kill-switch")
    parser.add_argument("--cold", action="store_true", help="no bytecode cache for leakcheck's modules")
    args = parser.parse_args()
    env = python_env(args.cold)
    linux.private_mounts()
    lab = Lab()
    try:
        lab.build()
        lab.reset(args.scenario)
        config_path = lab.workdir / "bench.toml"
        config_path.write_text(to_toml(LAB_CONFIG))
        others = [n for n in probe_names() if not n.startswith("posture-")]
        without = run_argv(lab, config_path, ["--passive", *[a for n in others for a in ("--probe", n)]])
        everything = run_argv(lab, config_path, ["--passive"])
        floor = floor_argv(["ip", "netns", "exec", lab.lap])
        for argv in (without, everything, floor):  # warm the page cache (and bytecode cache when warm)
            timed_process(argv, env)
        floors, bare, full = [], [], []
        for _ in range(args.runs):
            floors.append(timed_process(floor, env)[0])
            bare.append(timed_process(without, env)[0])
            full.append(timed_process(everything, env)[0])
        in_process = [posture_ms(lab, everything, env) for _ in range(args.runs)]
        print(f"scenario {args.scenario}, {args.runs} rounds; {cache_note(args.cold)}; "
              f"floor: python -c \"import pyroute2, psutil\"")
        print(f"floor median                  {median(floors) * 1000:6.0f} ms")
        print(f"passive without posture       {median(bare) * 1000:6.0f} ms")
        print(f"passive with posture          {median(full) * 1000:6.0f} ms")
        print(f"added by posture (paired)     {median([f - b for f, b in zip(full, bare)]) * 1000:6.0f} ms")
        print(f"posture probes in-process     {median(in_process):6.1f} ms (sum of their duration_ms)")
    finally:
        lab.close()


if __name__ == "__main__":
    main()
