"""`leakcheck status`: the agent's spool, uploads and tunnel history."""

from __future__ import annotations

import argparse
import json

from leakcheck import config as config_mod


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="show spool depth, last upload, last error, tunnel history")
    parser.add_argument("--config", metavar="FILE", help=f"configuration file (default {config_mod.DEFAULT_PATH})")
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.set_defaults(func=execute)


def gather(config: config_mod.Config) -> dict:
    from leakcheck.agent.delivery import open_spool, read_token
    from leakcheck.agent.files import read_json
    from leakcheck.agent.state import TunnelHistory

    spool = open_spool(config)
    entries = spool.entries()
    state = spool.state.read()
    return {
        "collector": config.get("collector", "url") or None,
        "enrolled": read_token(config) is not None,
        "spool_depth": len(entries),
        "spool_bytes": sum(e.size for e in entries),
        "oldest_spooled_report": entries[0].report_id if entries else None,
        # Reports the collector kept failing on, set aside (spool/quarantine/).
        "quarantined": spool.quarantined(),
        "quarantined_reports": spool.quarantined_ids()[-20:],
        "last_upload": state["last_upload"], "last_error": state["last_error"],
        "last_error_at": state["last_error_at"], "dropped": state["dropped"],
        "tunnel_history": TunnelHistory(spool.paths).read()[-20:],
        "watch": _watch(config, read_json(spool.paths.watch, None)),
    }


def _watch(config: config_mod.Config, state: dict | None) -> dict:
    """The live watch's state (watch.json, written by the agent) and its flows spool."""
    from leakcheck.agent.delivery import open_flow_spool

    flows = open_flow_spool(config)
    entries = flows.entries()
    out = dict(state) if isinstance(state, dict) else {
        "enabled": bool(config.get("agent", "watch")), "state": "unknown",
        "detail": "the agent has not run since the watch was added"}
    out.update(spool_documents=len(entries), spool_bytes=sum(e.size for e in entries),
               quarantined_documents=flows.quarantined(), last_upload=flows.state.read()["last_upload"],
               last_error=flows.state.read()["last_error"])
    return out


def execute(args: argparse.Namespace) -> int:
    status = gather(config_mod.load(args.config))
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"collector:    {status['collector'] or '(none configured)'}"
          f"{'' if status['enrolled'] else ' - not enrolled'}")
    print(f"spool:        {status['spool_depth']} report(s), {status['spool_bytes']} bytes"
          f"; dropped so far: {status['dropped']}")
    if status["quarantined"]:
        print(f"quarantined:  {status['quarantined']} report(s) the collector kept failing on, "
              f"kept in the spool's quarantine/ directory")
    print(f"last upload:  {status['last_upload'] or 'never'}")
    print(f"last error:   {status['last_error'] or 'none'}"
          f"{' at ' + status['last_error_at'] if status['last_error'] and status['last_error_at'] else ''}")
    watch = status["watch"]
    print(f"watch:        {watch['state']}" + (f" - {watch['detail']}" if watch.get("detail") else ""))
    if "flows_seen" in watch:
        print(f"              flows outside the tunnel: {watch['flows_new']} sent as new, "
              f"{watch['flow_updates']} update(s), {watch['flows_seen']} event(s) seen; "
              f"last at {watch['last_flow_at'] or 'never'}")
    for text in watch.get("cannot") or []:
        print(f"              cannot: {text}")
    print(f"              flows spool: {watch['spool_documents']} document(s), {watch['spool_bytes']} bytes; "
          f"last upload {watch['last_upload'] or 'never'}"
          + (f"; last error: {watch['last_error']}" if watch["last_error"] else ""))
    print("tunnel history (latest last):")
    if not status["tunnel_history"]:
        print("  no transitions recorded")
    for entry in status["tunnel_history"]:
        back = (f"up {entry['up_at']} after {entry['outage_s']:.1f} s" if entry["up_at"]
                else "still down")
        print(f"  {entry['interface']}: down {entry['down_at']}, {back}")
    return 0
