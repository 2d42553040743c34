"""Benchmark: what the posture probes (every `posture-*` probe) add to a
passive `leakcheck run` in the lab.

Builds the lab with a real client (default: the `openvpn` style, whose
client writes the log posture-crypto reads), then per round, right after
one another in the laptop namespace: the floor (`python -c "import
pyroute2, psutil"`), a passive run of every probe but the posture ones, a
passive run of every probe. Prints medians, the median of the per-round
differences (the posture cost; target: at most 0.1 s) and the posture
probes' own duration_ms from the reports. Run as root:

    .venv/bin/python tests/bench/bench_posture.py [--runs 10] [--scenario openvpn] [--cold]
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
from tests.lab import openvpn, strongswan  # noqa: E402,F401 - register the client styles
from tests.lab.topology import Lab, to_toml  # noqa: E402

def posture_probes() -> tuple[str, ...]:
    """Every posture probe the registry knows (forced, autoconnect, captive, auth, crypto, updates)."""
    from leakcheck.registry import discover
    return tuple(name for name in discover() if name.startswith("posture-"))


POSTURE = posture_probes()


def probe_args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--probe", name)]


def posture_durations(lab: Lab, config: Path, env: dict[str, str]) -> dict[str, int]:
    done = subprocess.run(run_argv(lab, config, ["--passive", *probe_args(list(POSTURE))]), env=env,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout)
    return {p["probe"]: p["duration_ms"] for p in report["probes"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scenario", default="openvpn")
    parser.add_argument("--cold", action="store_true", help="no bytecode cache for leakcheck's modules")
    args = parser.parse_args()
    env = python_env(args.cold)
    linux.private_mounts()
    lab = Lab()
    try:
        lab.build()
        lab.reset(args.scenario)
        config = lab.workdir / "bench.toml"
        config.write_text(to_toml(LAB_CONFIG))
        listed = subprocess.run([sys.executable, "-m", "leakcheck", "probes"], capture_output=True, text=True,
                                env=env, check=True).stdout
        every = [line.split()[0] for line in listed.splitlines() if line and not line[0].isspace()]
        others = [name for name in every if name not in POSTURE]
        without = run_argv(lab, config, ["--passive", *probe_args(others)])
        with_posture = run_argv(lab, config, ["--passive", *probe_args(every)])
        for argv in (without, with_posture):  # warm the page cache (and the bytecode cache when warm)
            timed_process(argv, env)
        floors, base, full = [], [], []
        for _ in range(args.runs):
            floors.append(timed_process(floor_argv(["ip", "netns", "exec", lab.lap]), env)[0])
            base.append(timed_process(without, env)[0])
            full.append(timed_process(with_posture, env)[0])
        print(f"scenario {args.scenario}, {args.runs} rounds; {cache_note(args.cold)}; "
              f"floor: python -c \"import pyroute2, psutil\"")
        print(f"floor median {median(floors) * 1000:5.0f} ms | passive without posture {median(base) * 1000:5.0f} ms"
              f" ({median([b / f for b, f in zip(base, floors)]):4.2f}x floor) | passive with posture "
              f"{median(full) * 1000:5.0f} ms ({median([a / f for a, f in zip(full, floors)]):4.2f}x floor)")
        print(f"posture cost: median of per-round differences {median([a - b for a, b in zip(full, base)]) * 1000:+5.0f}"
              f" ms (target <= 100 ms); duration_ms in a report: {posture_durations(lab, config, env)}")
    finally:
        lab.close()


if __name__ == "__main__":
    main()
