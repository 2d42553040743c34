"""Who this device is, for the report's `device` block."""

from __future__ import annotations

import hashlib
import platform
import socket
from pathlib import Path

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def device_id() -> str:
    """A stable id derived from the OS machine id (hashed: the raw id is
    sensitive). Falls back to the hostname when no machine id exists."""
    for path in MACHINE_ID_FILES:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw:
            return hashlib.sha256(b"leakcheck:" + raw.encode()).hexdigest()[:32]
    return hashlib.sha256(b"leakcheck-host:" + socket.gethostname().encode()).hexdigest()[:32]


def describe() -> dict[str, str]:
    return {"id": device_id(), "hostname": socket.gethostname(), "os": platform.system().lower(),
            "os_version": _os_version()}


def _os_version() -> str:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                      if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') + f" (kernel {platform.release()})"
    except OSError:
        return platform.release()
