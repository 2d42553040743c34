"""Benchmark: wall time and peak RSS of `leakcheck run --json` in the lab.

Builds the lab (isp, vpn gateway, laptop with a correct wg-quick tunnel),
then runs the real CLI inside the laptop namespace N times, passive
(--passive: no test packets) and with active checks (test packets and
capture). Each run is paired with a run of the floor, `python -c "import
pyroute2, psutil"` in the same namespace, right before it, so both see the
same machine load; it prints the medians, the ratio run/floor (median of
the pairs' ratios) and the peak RSS of each run (from wait4). Run as root:

    .venv/bin/python tests/bench/bench_run.py [--runs 10] [--scenario wg-quick] [--cold]

Targets (issue 8): passive at most 1.6x the floor and 40 MB peak RSS; the
full active run at most 1.5 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.common import cache_note, floor_argv, median, python_env, timed_process  # noqa: E402
from tests.lab import LAB_CONFIG  # noqa: E402
from tests.lab import linux  # noqa: E402
from tests.lab.topology import Lab, to_toml  # noqa: E402

Run = tuple[float, float, int]  # wall seconds, peak RSS MB, exit status


def run_argv(lab: Lab, config_path: Path, extra: list[str]) -> list[str]:
    return ["ip", "netns", "exec", lab.lap, sys.executable, "-m", "leakcheck", "run", "--json",
            "--config", str(config_path), *extra]


def paired(lab: Lab, argv: list[str], env: dict[str, str], runs: int) -> tuple[list[Run], list[Run]]:
    """(floor runs, leakcheck runs), each leakcheck run right after its floor run."""
    floors, mine = [], []
    for _ in range(runs):
        floors.append(timed_process(floor_argv(["ip", "netns", "exec", lab.lap]), env))
        mine.append(timed_process(argv, env))
    return floors, mine


def report(label: str, floors: list[Run], runs: list[Run]) -> None:
    walls = [w for w, _, _ in runs]
    rss = [r for _, r, _ in runs]
    floor = median([w for w, _, _ in floors])
    ratio = median([w / f for (w, _, _), (f, _, _) in zip(runs, floors)])
    codes = sorted({c for _, _, c in runs})
    print(f"{label:<26} wall median {median(walls) * 1000:5.0f} ms  max {max(walls) * 1000:5.0f} ms"
          f" | floor median {floor * 1000:4.0f} ms (peak RSS {median([r for _, r, _ in floors]):4.1f} MB)"
          f" | ratio {ratio:4.2f}x | peak RSS median {median(rss):4.1f} MB max {max(rss):4.1f} MB | exit {codes}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scenario", default="wg-quick")
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
        for extra in (["--passive"], []):  # warm the page cache (and the bytecode cache when warm)
            timed_process(run_argv(lab, config_path, extra), env)
        timed_process(floor_argv(["ip", "netns", "exec", lab.lap]), env)
        print(f"scenario {args.scenario}, {args.runs} runs each; {cache_note(args.cold)}; "
              f"floor: python -c \"import pyroute2, psutil\"")
        report("passive (no test packets)", *paired(lab, run_argv(lab, config_path, ["--passive"]), env, args.runs))
        report("with active checks", *paired(lab, run_argv(lab, config_path, []), env, args.runs))
    finally:
        lab.close()


if __name__ == "__main__":
    main()
