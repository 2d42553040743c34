"""Poke at a lab scenario by hand (as root):

    python3 -m tests.lab --list
    python3 -m tests.lab def1+tunnelvision                      # a shell inside the laptop
    python3 -m tests.lab ipsec -- python3 -m leakcheck run      # one command inside the laptop

Builds the lab, resets the laptop to SCENARIO (default wg-quick), runs the
command (or an interactive shell) inside the laptop with the repo root as
cwd and on PYTHONPATH, then tears everything down. Other namespaces are
reachable from that shell too: `ip netns exec <name> ...` with the names
printed at start (wg, and the agent, see the lab's private /run/wireguard).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tests.lab.scenarios import describe
from tests.lab.topology import REPO_ROOT, Lab, LabError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="wg-quick", help="style+fault+... (default wg-quick)")
    parser.add_argument("--list", action="store_true", help="list styles and faults")
    args = parser.parse_args(argv)
    if args.list:
        print(describe())
        return 0
    lab = Lab()
    lab.install_exit_handlers()
    try:
        lab.build()
        lab.reset(args.scenario)
        print(f"lab {args.scenario}: laptop {lab.lap}, isp {lab.isp}, vpn {lab.vpn} "
              f"(reset {lab.reset_seconds[-1]:.2f}s)", file=sys.stderr)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))),
                   LAB_LAP=lab.lap, LAB_ISP=lab.isp, LAB_VPN=lab.vpn)
        return subprocess.run(["ip", "netns", "exec", lab.lap, *(command or [os.environ.get("SHELL", "bash")])],
                              cwd=REPO_ROOT, env=env).returncode
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.close()


if __name__ == "__main__":
    raise SystemExit(main())
