"""`leakcheck watch`: print every flow that leaves outside the tunnel, as it happens."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from leakcheck import config as config_mod
from leakcheck.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("watch", help="show real flows leaving outside the tunnel, live, with their process")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    parser.add_argument("--json", action="store_true", help="one JSON finding per line")
    parser.add_argument("--config", metavar="FILE", help=f"configuration file (default {config_mod.DEFAULT_PATH})")
    parser.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from leakcheck.watch import render
    from leakcheck.watch.engine import Watch

    if args.duration is not None and args.duration <= 0:
        print("leakcheck: error: --duration must be positive", file=sys.stderr)
        return ExitCode.USAGE
    config = config_mod.load(args.config)
    seen = {"flows": 0}

    def on_flow(record, first: bool) -> None:
        if not first:
            return
        seen["flows"] += 1
        print(render.json_line(record) if args.json else render.line(record), flush=True)

    watch = Watch(config, on_flow=on_flow)
    stop = threading.Event()
    # SIGTERM ends the watch like Ctrl-C: the filter is removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    watch.start()  # WatchUnavailable: one line and exit 3 (cli.main)
    out = sys.stderr if args.json else sys.stdout  # --json keeps stdout to findings only
    print(f"leakcheck watch: watching {watch.watching[0]}", file=out, flush=True)
    for text in watch.cannot:
        print(f"leakcheck watch: cannot: {text}", file=out, flush=True)
    try:
        watch.run(stop, duration=args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        watch.close()
    if watch.lost_reads:
        print(f"leakcheck watch: the kernel dropped logged packets {watch.lost_reads} time(s) (queue full): "
              f"some flows may be missing", file=out, flush=True)
    if not args.json:
        print(f"leakcheck watch: {seen['flows']} flow(s) outside the tunnel", flush=True)
    return ExitCode.LEAK if seen["flows"] else ExitCode.PASS
