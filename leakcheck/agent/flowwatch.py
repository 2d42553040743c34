"""The live watch inside the agent: flows from the watch to the collector within seconds.

    python -m leakcheck.agent.flowwatch [--config FILE] [--source MODULE:FACTORY]

The watch runs in a child process, as the checks do (worker.py): it holds
the kernel filter, pyroute2 and the process lookups, and the idle agent
stays small; if the child dies, its nftables table goes with it (owner
flag) and the agent starts another. The child prints one JSON object per
line on stdout:

    {"event": "started", "watching": ["..."], "cannot": ["..."]}
    {"event": "flow", "flow": {finding: leakcheck.flows/1 shape}}
    {"event": "unavailable", "reason": "no CAP_NET_ADMIN ..."}

A *source* is what the child runs: `factory(config, on_flow)` returns an
object with `run(stop_event)` that calls `on_flow(finding_dict)` for each
new or updated flow until `stop_event` is set (optionally `start()`, and
`watching` / `cannot` lists of sentences). The default source is the
kernel watch, leakcheck.watch.engine.Watch.

In the agent, FlowPipeline reads those lines, batches flows for at most
`batch_s` (a new flow never waits longer), sends an update of an already
sent flow (same dedup key, higher count) at most every `update_s`,
spools each batch durably as a flows document (leakcheck/flows.py; the
flows spool follows the report spool's ack/quarantine rules) and kicks
the flows uploader. watch.json holds the watch's state and counts for
`leakcheck status`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

log = logging.getLogger("leakcheck.agent")
DEFAULT_SOURCE = "leakcheck.agent.flowwatch:kernel_source"
DOCUMENT_FLOWS = 100  # flows per document; a burst becomes several documents
SENT_KEYS_MAX = 10_000  # keys remembered as sent (the watch's own table has the same bound)


# -- the child ------------------------------------------------------------------------

class KernelSource:
    """leakcheck.watch's kernel watch as a source (the watch-kernel work)."""

    def __init__(self, config: Any, on_flow: Callable[[dict[str, Any]], None]):
        from leakcheck.watch.engine import Watch

        self.watch = Watch(config, on_flow=lambda record, first: on_flow(record.to_dict()))

    @property
    def watching(self) -> list[str]:
        return list(self.watch.watching)

    @property
    def cannot(self) -> list[str]:
        return list(self.watch.cannot)

    def start(self) -> None:
        self.watch.start()

    def run(self, stop: threading.Event) -> None:
        self.watch.run(stop)


def kernel_source(config: Any, on_flow: Callable[[dict[str, Any]], None]) -> Any:
    try:
        return KernelSource(config, on_flow)
    except ImportError as exc:
        from leakcheck.errors import LeakcheckError
        raise LeakcheckError(f"this leakcheck has no live watch (leakcheck.watch): {exc}") from None


def load_source(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _die_with_parent() -> None:
    # The agent gone (even by SIGKILL), the watch must not stay behind.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leakcheck.agent.flowwatch")
    parser.add_argument("--config")
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    _die_with_parent()
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())

    from leakcheck import config as config_mod
    from leakcheck.agent import logfmt
    from leakcheck.errors import LeakcheckError

    logfmt.configure(args.verbose)
    out_lock = threading.Lock()

    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
        with out_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    try:
        config = config_mod.load(args.config)
        source = load_source(args.source)(config, lambda flow: emit({"event": "flow", "flow": flow}))
        if hasattr(source, "start"):
            source.start()
    except (LeakcheckError, OSError) as exc:
        emit({"event": "unavailable", "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        return 3
    emit({"event": "started", "watching": list(getattr(source, "watching", [])),
          "cannot": list(getattr(source, "cannot", []))})
    source.run(stop)
    return 0


# -- the agent's side -------------------------------------------------------------------

class FlowBatcher:
    """Which flows go in the next document, and when.

    A flow whose dedup key was never sent is due `batch_s` after the first
    such flow arrived (so a leak waits at most that long). A later flow of
    a key already sent is an update: only its latest state is kept, due
    `update_s` after that key was last sent, so a busy flow costs one
    update per `update_s`, not one per packet."""

    def __init__(self, batch_s: float = 0.5, update_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.batch_s = batch_s
        self.update_s = update_s
        self.clock = clock
        self.pending: dict[tuple, dict[str, Any]] = {}
        self.sent: dict[tuple, float] = {}  # key -> when last sent (insertion order = oldest first)
        self.new_since: float | None = None  # arrival of the oldest pending new flow

    def add(self, flow: dict[str, Any]) -> None:
        from leakcheck.flows import dedup_key

        key = dedup_key(flow)
        self.pending[key] = flow
        if key not in self.sent and self.new_since is None:
            self.new_since = self.clock()

    def due_at(self) -> float | None:
        """When take() next has something to give; None when nothing is pending."""
        times = [self.new_since + self.batch_s] if self.new_since is not None else []
        times += [self.sent[k] + self.update_s for k in self.pending if k in self.sent]
        return min(times) if times else None

    def take(self, force: bool = False) -> tuple[list[dict[str, Any]], int]:
        """The flows due now (`force`: every pending one), and how many of them are updates."""
        now = self.clock()
        new_due = force or self.new_since is not None and now >= self.new_since + self.batch_s
        out, updates = [], 0
        for key in list(self.pending):
            last = self.sent.get(key)
            if last is None and not new_due or last is not None and not force and now < last + self.update_s:
                continue
            out.append(self.pending.pop(key))
            updates += last is not None
            self.sent.pop(key, None)
            self.sent[key] = now
        if new_due:
            self.new_since = None
        while len(self.sent) > SENT_KEYS_MAX:
            self.sent.pop(next(iter(self.sent)))
        return out, updates


def documents(flows: list[dict[str, Any]], device: dict[str, str], version: str) -> list[dict[str, Any]]:
    """Flows documents, each within the contract's count and the body size the collector takes."""
    from leakcheck.flows import FlowsContract, conform, document

    docs: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for flow in flows:
        doc = conform(document([flow], device, version))
        one = len(json.dumps(doc["flows"][0], separators=(",", ":")))
        if chunk and (len(chunk) >= DOCUMENT_FLOWS or size + one > FlowsContract.DOCUMENT_BYTES - 4096):
            docs.append(document(chunk, device, version))
            chunk, size = [], 0
        chunk.append(doc["flows"][0])
        size += one
    if chunk:
        docs.append(document(chunk, device, version))
    return [conform(d) for d in docs]


class FlowPipeline(threading.Thread):
    """Runs the watch child, batches its flows into the flows spool, kicks the uploader."""

    def __init__(self, argv: list[str], spool: Any, kick: Callable[[], None], state_file: Any,
                 batch_s: float = 0.5, update_s: float = 10.0, restart_s: float = 30.0,
                 unavailable_retry_s: float = 300.0):
        super().__init__(name="flowwatch", daemon=True)
        from leakcheck import __version__
        from leakcheck.device import describe

        self.argv = argv
        self.spool = spool
        self.kick = kick
        self.state_file = state_file
        self.batcher = FlowBatcher(batch_s, update_s)
        self.restart_s = restart_s
        self.unavailable_retry_s = unavailable_retry_s
        self.device = describe()
        self.version = __version__
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self.status: dict[str, Any] = {"enabled": True, "state": "starting", "detail": None, "watching": [],
                                       "cannot": [], "since": None, "flows_seen": 0, "flows_new": 0,
                                       "flow_updates": 0, "documents": 0, "last_flow_at": None, "restarts": 0}
        self._save()

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def run(self) -> None:
        while not self._stopping.is_set():
            outcome = self._run_child()
            self._flush(force=True)
            if self._stopping.is_set():
                break
            wait = self.unavailable_retry_s if outcome == "unavailable" else self.restart_s
            if outcome != "unavailable":
                self._set(state="restarting", detail=f"the watch stopped; starting it again in {wait:.0f} s")
            self.status["restarts"] += 1
            self._stopping.wait(wait)
        self._set(state="stopped", detail="the agent stopped")

    def _run_child(self) -> str:
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except OSError as exc:
            self._set(state="unavailable", detail=f"cannot start the watch: {exc}")
            return "unavailable"
        fd = self.proc.stdout.fileno()
        buffer = b""
        outcome = "exited"
        try:
            while True:
                due = self.batcher.due_at()
                timeout = None if due is None else max(0.0, due - time.monotonic())
                ready, _, _ = select.select([fd], [], [], timeout)
                if ready:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        break
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        outcome = self._line(line) or outcome
                self._flush()
        finally:
            self.proc.stdout.close()
            code = self.proc.wait()
            if outcome != "unavailable" and not self._stopping.is_set():
                log.warning("watch: the watch process ended (exit status %s)", code)
        return outcome

    def _line(self, line: bytes) -> str | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        kind = event.get("event")
        if kind == "flow" and isinstance(event.get("flow"), dict):
            self.batcher.add(event["flow"])
            self.status["flows_seen"] += 1
            self.status["last_flow_at"] = _now()
        elif kind == "started":
            self._set(state="running", detail=None, since=_now(), watching=event.get("watching", []),
                      cannot=event.get("cannot", []))
            log.info("watch: running%s", "".join(f"; cannot: {c}" for c in event.get("cannot", [])))
        elif kind == "unavailable":
            self._set(state="unavailable", detail=str(event.get("reason"))[:500])
            log.warning("watch: unavailable: %s", event.get("reason"))
            return "unavailable"
        return None

    def _flush(self, force: bool = False) -> None:
        flows, updates = self.batcher.take(force)
        if not flows:
            return
        docs = documents(flows, self.device, self.version)
        for doc in docs:
            self.spool.add(doc)
        self.status["flows_new"] += len(flows) - updates
        self.status["flow_updates"] += updates
        self.status["documents"] += len(docs)
        self._save()
        log.info("watch: %d flow(s) outside the tunnel spooled (%d update(s))", len(flows), updates)
        self.kick()

    def _set(self, **changes: Any) -> None:
        self.status.update(changes)
        self._save()

    def _save(self) -> None:
        from leakcheck.agent.files import write_json
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.state_file, self.status)
        except OSError as exc:
            log.warning("watch: cannot write %s: %s", self.state_file, exc)


def write_off(state_file: Any, detail: str) -> None:
    """watch.json when the agent does not run the watch (configured off, not privileged)."""
    from leakcheck.agent.files import write_json
    state_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(state_file, {"enabled": False, "state": "off", "detail": detail})


def _now() -> str:
    from leakcheck.agent.state import now_text
    return now_text()


if __name__ == "__main__":
    sys.exit(child_main())
