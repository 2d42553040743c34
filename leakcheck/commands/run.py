"""`leakcheck run`: one leak check now, a verdict and an exit status."""

from __future__ import annotations

import argparse
import sys

from leakcheck import config as config_mod
from leakcheck.errors import ExitCode
from leakcheck.report import Report, Verdict

EXIT_FOR_VERDICT = {Verdict.PASS: ExitCode.PASS, Verdict.WARN: ExitCode.PASS,
                    Verdict.LEAK: ExitCode.LEAK, Verdict.ERROR: ExitCode.PROBE_ERROR}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="check for leaks now and print a verdict",
                            description="Check for VPN leaks now. Exit status: 0 pass or warn, "
                                        "1 leak, 2 usage or configuration error, 3 a probe "
                                        "could not complete.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (schema leakcheck.report/1)")
    parser.add_argument("--config", metavar="FILE", help=f"configuration file (default {config_mod.DEFAULT_PATH})")
    parser.add_argument("--probe", metavar="NAME", action="append", default=[],
                        help="run only this probe (repeatable)")
    parser.add_argument("--trigger", choices=("manual", "schedule", "network-change"), default="manual",
                        help="what started this run, recorded in the report (timers and "
                             "schedulers pass schedule)")
    parser.add_argument("--passive", action="store_true",
                        help="send no test packets: judge from routes, rules and resolvers only")
    parser.add_argument("--disruptive", action="store_true",
                        help="allow probes that briefly cut the tunnel (reconnect test)")
    parser.add_argument("--upload", action="store_true",
                        help="also spool the report and deliver it to collector.url (as the agent does)")
    parser.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from leakcheck import engine, render

    config = config_mod.load(args.config)
    report = engine.run(config, engine.RunOptions(probes=tuple(args.probe), disruptive=args.disruptive,
                                                     passive=args.passive, trigger=args.trigger))
    if getattr(args, "upload", False):
        _upload(report, config)
    sys.stdout.write(render.render_json(report) + "\n" if args.json else render.render_text(report))
    return int(exit_status(report))


def _upload(report: Report, config: config_mod.Config) -> None:
    # Imported here: requests and the spool cost nothing for a plain `run`.
    from leakcheck.agent.delivery import deliver_now

    result = deliver_now(report, config)
    if result.remaining:
        print(f"leakcheck: upload incomplete ({result.error}); {result.remaining} report(s) "
              "stay spooled and will be delivered later", file=sys.stderr)


def exit_status(report: Report) -> ExitCode:
    return EXIT_FOR_VERDICT[report.verdict]
