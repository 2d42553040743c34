"""Wire formats of events: the signed webhook batch, RFC 5424 syslog, CEF.

Webhook signature (verify it like this on the receiving side):

    timestamp = request.headers["X-Leakcheck-Timestamp"]        # Unix seconds
    expected  = "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + raw_body))
    accept iff hmac.compare_digest(expected, request.headers["X-Leakcheck-Signature"])
           and abs(now - int(timestamp)) <= 300

Signing the timestamp with the body stops a captured call being replayed
later; `verify` below is the reference implementation. Hash the raw bytes
received, before any JSON parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime
from typing import Any

from leakcheck import __version__

SCHEMA = "leakcheck.alerts/1"
TIMESTAMP_HEADER = "X-Leakcheck-Timestamp"
SIGNATURE_HEADER = "X-Leakcheck-Signature"
TOLERANCE_S = 300
# RFC 5612's example Private Enterprise Number, for SD-IDs of the form name@PEN,
# until the project registers its own.
SD_ID = "leakcheck@32473"
APP_NAME = "leakcheck"
# Severities of syslog (RFC 5424 6.2.1) and CEF (0..10) per event severity.
_SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
_CEF_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 3, "info": 1}


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, sig: str, body: bytes, now: float | None = None) -> bool:
    """What a receiver does: a valid signature over this body, made recently."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - stamp) > TOLERANCE_S:
        return False
    return hmac.compare_digest(signature(secret, stamp, body), sig)


def webhook_body(batch_id: str, events: list[dict[str, Any]], sent_at: str) -> bytes:
    return json.dumps({"schema": SCHEMA, "batch": batch_id, "sent_at": sent_at, "events": events},
                      separators=(",", ":")).encode("utf-8")


def syslog_line(event: dict[str, Any], facility: int, hostname: str, fmt: str) -> bytes:
    """One RFC 5424 message (no framing): HEADER SP STRUCTURED-DATA SP MSG.

    MSG is the event as JSON (format rfc5424) or a CEF line (format cef).
    JSON is written ASCII-only, so it is plain MSG-ANY; a CEF line with
    non-ASCII text is sent as MSG-UTF8 (a BOM first), as section 6.4 asks."""
    severity = event.get("severity", "info")
    pri = facility * 8 + _SYSLOG_SEVERITY.get(severity, 6)
    msgid = _printable(event["type"], 32)
    header = f"<{pri}>1 {event['time']} {_printable(hostname, 255)} {APP_NAME} - {msgid}"
    device = event.get("device", {})
    params = (("id", event["id"]), ("type", event["type"]), ("device", device.get("id", "")),
              ("hostname", device.get("hostname", "")), ("severity", severity))
    sd = "[" + SD_ID + "".join(f' {name}="{_sd_escape(str(value))}"' for name, value in params) + "]"
    if fmt == "cef":
        msg = cef_line(event)
        data = msg.encode("utf-8")
        if not msg.isascii():
            data = b"\xef\xbb\xbf" + data
    else:
        slim = {k: v for k, v in event.items() if k != "ocsf"}
        data = json.dumps(slim, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return f"{header} {sd} ".encode("utf-8") + data


def cef_line(event: dict[str, Any]) -> str:
    """CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension"""
    device = event.get("device", {})
    details = event.get("details", {})
    header = [_cef_header("leakcheck"), _cef_header("leakcheck"), _cef_header(__version__),
              _cef_header(event["type"]), _cef_header(event.get("summary", event["type"])),
              str(_CEF_SEVERITY.get(event.get("severity", "info"), 1))]
    ext: list[tuple[str, Any]] = [
        ("rt", _epoch_ms(event)), ("externalId", event["id"]), ("cat", event["type"]),
        ("deviceExternalId", device.get("id", "")), ("dvchost", device.get("hostname", "")),
        ("msg", event.get("summary", "")),
    ]
    if details.get("finding_ids"):
        ext += [("cs1Label", "findingIds"), ("cs1", ",".join(details["finding_ids"]))]
    if details.get("report_id"):
        ext += [("cs2Label", "reportId"), ("cs2", details["report_id"])]
    if isinstance(details.get("reconnect_s"), (int, float)):
        ext += [("cn1Label", "reconnectSeconds"), ("cn1", int(details["reconnect_s"]))]
    return "CEF:0|" + "|".join(header) + "|" + " ".join(f"{k}={_cef_value(str(v))}" for k, v in ext)


def _epoch_ms(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp() * 1000)


def _printable(text: str, limit: int) -> str:
    """HOSTNAME, APP-NAME, MSGID: 1..limit printable US-ASCII (33..126), or the nil value."""
    clean = "".join(c for c in text if "!" <= c <= "~")[:limit]
    return clean or "-"


def _sd_escape(value: str) -> str:
    # RFC 5424 6.3.3: inside PARAM-VALUE, '"', '\' and ']' are escaped with '\'.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n"))
