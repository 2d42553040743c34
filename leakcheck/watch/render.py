"""The watch in plain words: one line per flow, for the helpdesk's terminal."""

from __future__ import annotations

import json

from leakcheck.watch.model import FlowRecord


def line(record: FlowRecord) -> str:
    """`HH:MM:SS LEAK <summary> [finding id]`, with the executable and cgroup when known."""
    when = record.evidence()["first_seen"][11:19]
    extra = []
    if record.exe:
        extra.append(f"exe {record.exe}")
    if record.cgroup and record.cgroup != "/":
        extra.append(f"cgroup {record.cgroup}")
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"{when} LEAK {record.summary()}{tail} [{record.id}]"


def json_line(record: FlowRecord) -> str:
    return json.dumps(record.to_dict(), separators=(",", ":"))
