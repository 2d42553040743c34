"""Benchmark: the split probe's exact egress map over a 10,000-route table.

Builds a throw-away network namespace with a tunnel-like veth carrying the
default route and N more-specific public routes on a "physical" veth, then
times the split probe (boundaries + one kernel lookup per piece) in it.
Run as root:  .venv/bin/python tests/bench/bench_split.py [--routes 10000]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, check=True, input=stdin, text=True)


def build(ns: str, routes: int) -> None:
    sh("ip", "netns", "add", ns)
    ip = ["ip", "-n", ns]
    sh(*ip, "link", "set", "lo", "up")
    sh(*ip, "link", "add", "phys0", "type", "veth", "peer", "name", "phys1")
    sh(*ip, "link", "add", "vtun0", "type", "veth", "peer", "name", "vtun1")
    for dev, addr in (("phys0", "100.64.0.2/24"), ("vtun0", "100.100.0.2/24")):
        sh(*ip, "addr", "add", addr, "dev", dev)
    for dev in ("phys0", "phys1", "vtun0", "vtun1"):
        sh(*ip, "link", "set", dev, "up")
    rng = random.Random(7)
    seen: set[int] = set()
    lines = ["route add default dev vtun0"]
    while len(seen) < routes:
        net = ipaddress.ip_network((rng.randrange(1 << 24) << 8, 24))
        if int(net.network_address) in seen or net.is_private or net.is_multicast or net.is_reserved:
            continue
        seen.add(int(net.network_address))
        lines.append(f"route add {net} via 100.64.0.1 dev phys0 proto dhcp")
    sh("ip", "-n", ns, "-batch", "-", stdin="\n".join(lines) + "\n")


def measure(repeats: int) -> None:
    from leakcheck import config, tunnel as tunnel_mod
    from leakcheck.linux import read_state
    from leakcheck.oracle import Oracle
    from leakcheck.probe import ProbeContext
    from leakcheck.probes.split import SplitProbe, build_map

    cfg = config.from_mapping({"tunnel": {"interfaces": ["vtun0"]}})
    reads, maps, lookups = [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        state = read_state()
        reads.append(time.perf_counter() - started)
        tunnel = tunnel_mod.detect(state, cfg)
        ctx = ProbeContext(config=cfg, state=state, tunnel=tunnel, oracle=Oracle(state, tunnel), is_root=True)
        started = time.perf_counter()
        findings = SplitProbe().run(ctx)
        maps.append(time.perf_counter() - started)
        lookups = build_map(ctx, 4).lookups
    routes = len([r for r in state.routes if r.table == 254])
    leak = next(f for f in findings if f.id == "split.prefixes-outside-tunnel")
    print(f"routes in main table: {routes}; kernel lookups per map: {lookups}")
    print(f"prefixes outside the tunnel: {leak.evidence['prefix_count']} ({leak.evidence['public_share']})")
    print(f"egress map (split probe, IPv4): median {statistics.median(maps) * 1000:.0f} ms, "
          f"max {max(maps) * 1000:.0f} ms over {repeats} runs")
    print(f"network state read (pyroute2 dump): median {statistics.median(reads) * 1000:.0f} ms")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args.repeats)
        return
    ns = f"lcbench{os.getpid()}"
    try:
        build(ns, args.routes)
        sh("ip", "netns", "exec", ns, sys.executable, __file__, "--inside", "--repeats", str(args.repeats))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
