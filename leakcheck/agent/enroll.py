"""Enrollment: the fleet secret buys a per-device token, stored 0600."""

from __future__ import annotations

import os
from pathlib import Path

from leakcheck import device
from leakcheck.agent.files import write_atomic
from leakcheck.agent.state import Paths, instance_id
from leakcheck.agent.uploader import verify_setting
from leakcheck.errors import LeakcheckError


class EnrollError(LeakcheckError):
    """The collector refused the enrollment or could not be reached."""


def enroll(url: str, secret: str, token_file: Path, paths: Paths, ca_file: str = "",
           timeout_s: float = 15.0) -> str:
    """Enroll this device; returns its device id. The token is written
    atomically with mode 0600 (its directory 0700 if we create it)."""
    import requests

    body = {"secret": secret, "device": device.describe(), "instance": instance_id(paths)}
    # Re-enrolling an enrolled device needs its current token (or an admin's
    # approval): the secret alone must not let anyone take a device over.
    headers = {"Authorization": f"Bearer {current}"} if (current := _current_token(token_file)) else {}
    try:
        response = requests.post(url.rstrip("/") + "/api/v1/enroll", json=body, timeout=timeout_s,
                                 verify=verify_setting(ca_file), headers=headers)
    except requests.RequestException as exc:
        raise EnrollError(f"cannot reach the collector at {url}: {exc}") from None
    if response.status_code != 201:
        detail = _detail(response)
        raise EnrollError(f"enrollment refused ({response.status_code}): {detail}")
    token = response.json()["token"]
    if not token_file.parent.exists():
        token_file.parent.mkdir(parents=True, mode=0o700)
    write_atomic(token_file, token.encode(), mode=0o600)
    os.chmod(token_file, 0o600)
    return response.json()["device_id"]


def _current_token(token_file: Path) -> str | None:
    try:
        return token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _detail(response) -> str:  # type: ignore[no-untyped-def]
    try:
        return str(response.json().get("detail"))[:300]
    except ValueError:
        return response.text[:300]
