"""Benchmark: reading the network state of a 10,000-route table.

Builds a throw-away network namespace (a tunnel-like veth with the default
route, N public /24 routes via a "physical" veth, as bench_split.py does)
and, inside it, times

- the netlink dump alone (links, addresses, routes, rules: leakcheck/linux/netlink.py),
- the whole state read of a run (leakcheck.linux.read_state: + xfrm,
  resolvers, WireGuard, firewall, sockets, sysctls),
- with --pyroute2, the same four dumps decoded from pyroute2's objects (the
  reader before the raw dump), for comparison,

as medians over --repeats reads in one process, then the wall time of a
fresh `python -c` that reads the state, against the floor of a bare
`python -c "import leakcheck.linux"` measured in the same run. Run as root:

    .venv/bin/python tests/bench/bench_netstate.py [--routes 10000] [--repeats 7] [--pyroute2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_split import build  # noqa: E402
from tests.bench.common import cache_note, python_env  # noqa: E402

READ = "from leakcheck.linux import read_state; read_state()"
FLOOR = "import leakcheck.linux"


def timed(read: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(median seconds, last result) of `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = read()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def fresh_processes(repeats: int, cold: bool) -> tuple[float, float, float]:
    """(floor, read, median of the pairs' ratios): wall times of `python -c`
    without and with the read, in this namespace, each read right after its floor."""
    env = python_env(cold)
    for code in (FLOOR, READ):  # not counted: warms the page cache (and the bytecode cache when warm)
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    floors, reads = [], []
    for _ in range(repeats):
        for code, times in ((FLOOR, floors), (READ, reads)):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
            times.append(time.perf_counter() - started)
    ratios = [r / f for r, f in zip(reads, floors)]
    return statistics.median(floors), statistics.median(reads), statistics.median(ratios)


def same_content(theirs: tuple, ours: tuple) -> str:
    """Compare the two views as sets per kind (dump order is the kernel's and
    may differ); name the first difference so it can be acted on. The two
    reads are moments apart: IPv6 link-local routes may appear in between
    (duplicate address detection finishing), which shows as a difference."""
    for kind, a, b in zip(("links", "addresses", "routes", "rules"), ours, theirs):
        only_ours, only_theirs = set(map(repr, a)) - set(map(repr, b)), set(map(repr, b)) - set(map(repr, a))
        if only_ours or only_theirs:
            return f"no, {kind}: raw only {sorted(only_ours)[:1]}, pyroute2 only {sorted(only_theirs)[:1]}"
    return "yes"


def measure(repeats: int, with_pyroute2: bool, cold: bool) -> None:
    from leakcheck.linux import netlink, read_state

    dump, (links, addresses, routes, rules) = timed(netlink.dump_all, repeats)
    print(f"state: {len(links)} links, {len(addresses)} addresses, {len(routes)} routes, {len(rules)} rules")
    print(f"netlink dump (raw rtnetlink):      median {dump * 1000:7.1f} ms")
    whole, _ = timed(read_state, repeats)
    print(f"whole state read (read_state):     median {whole * 1000:7.1f} ms")
    if with_pyroute2:
        from tests.lab.test_rtnl_lab import pyroute2_view
        old, reference = timed(pyroute2_view, max(1, repeats // 2))
        print(f"same dumps through pyroute2:       median {old * 1000:7.1f} ms  "
              f"(x{old / dump:.0f}; same content: {same_content(reference, (links, addresses, routes, rules))})")
    floor, fresh, ratio = fresh_processes(repeats, cold)
    print(cache_note(cold))
    print(f"python -c 'import leakcheck.linux' (floor): median {floor * 1000:6.0f} ms")
    print(f"python -c '...read_state()':               median {fresh * 1000:6.0f} ms"
          f"  ratio {ratio:.2f}, read {max(0.0, fresh - floor) * 1000:.0f} ms above the floor")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pyroute2", action="store_true", help="also time the pyroute2 reader")
    parser.add_argument("--cold", action="store_true", help="no bytecode cache for leakcheck's modules")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args.repeats, args.pyroute2, args.cold)
        return
    ns = f"lcstate{os.getpid()}"
    try:
        build(ns, args.routes)
        print(f"{args.routes} routes in namespace {ns}")
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inside", "--repeats",
                        str(args.repeats), *(["--pyroute2"] if args.pyroute2 else []),
                        *(["--cold"] if args.cold else [])], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
