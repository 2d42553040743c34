"""The agent's small state files: upload status and tunnel history."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leakcheck.agent.files import locked, read_json, write_atomic, write_json
from leakcheck.report import rfc3339

HISTORY_LIMIT = 1000


def now_text() -> str:
    return rfc3339(datetime.now(timezone.utc))


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def flows(self) -> Path:
        """The flows spool (leakcheck.flows/1 documents of the live watch)."""
        return self.root / "flows"

    @property
    def flows_state(self) -> Path:
        return self.root / "flows-state.json"

    @property
    def watch(self) -> Path:
        """watch.json: the live watch's state and flow counts, for `leakcheck status`."""
        return self.root / "watch.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def history(self) -> Path:
        return self.root / "tunnel-history.json"

    @property
    def instance(self) -> Path:
        return self.root / "instance"

    @property
    def lock(self) -> Path:
        return self.root / "lock"


class AgentState:
    """state.json: last upload, last error, dropped count (flows-state.json:
    the same for the flows spool, so flows never count as dropped reports)."""

    def __init__(self, paths: Paths, file: Path | None = None):
        self.paths = paths
        self.file = file or paths.state

    def read(self) -> dict[str, Any]:
        data = read_json(self.file, {})
        return {"last_upload": data.get("last_upload"), "last_error": data.get("last_error"),
                "last_error_at": data.get("last_error_at"), "dropped": int(data.get("dropped", 0))}

    def update(self, **changes: Any) -> dict[str, Any]:
        with locked(self.paths.lock):
            data = self.read()
            if "add_dropped" in changes:
                data["dropped"] += int(changes.pop("add_dropped"))
            data.update(changes)
            self.paths.root.mkdir(parents=True, exist_ok=True)
            write_json(self.file, data)
            return data


def instance_id(paths: Paths) -> str:
    """A random id for this installation, made once."""
    try:
        text = paths.instance.read_text().strip()
        if text:
            return text
    except OSError:
        pass
    paths.root.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    write_atomic(paths.instance, value.encode())
    return value


class TunnelHistory:
    """tunnel-history.json (format in the package docstring)."""

    def __init__(self, paths: Paths):
        self.paths = paths

    def read(self) -> list[dict[str, Any]]:
        data = read_json(self.paths.history, [])
        return data if isinstance(data, list) else []

    def went_down(self, interface: str, at: str | None = None) -> None:
        self._change(lambda h: h.append({"interface": interface, "down_at": at or now_text(),
                                         "up_at": None, "outage_s": None}))

    def came_up(self, interface: str, at: str | None = None) -> None:
        moment = at or now_text()

        def close(history: list[dict[str, Any]]) -> None:
            for entry in reversed(history):
                if entry["interface"] == interface and entry["up_at"] is None:
                    entry["up_at"] = moment
                    entry["outage_s"] = round(_seconds_between(entry["down_at"], moment), 3)
                    return
        self._change(close)

    def open_outages(self) -> set[str]:
        return {e["interface"] for e in self.read() if e.get("up_at") is None}

    def _change(self, edit) -> None:  # type: ignore[no-untyped-def]
        with locked(self.paths.lock):
            history = self.read()
            edit(history)
            self.paths.root.mkdir(parents=True, exist_ok=True)
            write_json(self.paths.history, history[-HISTORY_LIMIT:])


def _seconds_between(start: str, end: str) -> float:
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
