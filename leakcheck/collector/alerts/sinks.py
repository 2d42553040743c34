"""Senders: each takes a batch of events and delivers it, or raises SendError.

- webhook: one signed JSON POST per batch; any 2xx is an acknowledgement,
  anything else (or no answer within the timeout) a failure to retry.
  Redirects are not followed (a 3xx is a failure): the signature and the
  events go only to the configured URL.
- jsonl: one JSON object per line, appended and fsync'd per batch.
- syslog: one RFC 5424 message per event; UDP (RFC 5426, a datagram each)
  or TCP (RFC 6587 octet counting, one connection per batch). UDP cannot
  tell a lost datagram: for a syslog destination over UDP delivery is at
  most once past the socket, so prefer TCP when the feed must be complete.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
import uuid
from typing import Any, Protocol
from urllib.parse import urlsplit

from leakcheck import __version__
from leakcheck.collector.alerts import formats
from leakcheck.collector.alerts.config import JsonLines, Syslog, Webhook
from leakcheck.collector.alerts.events import iso

# A UDP datagram larger than this is likely fragmented or dropped; big
# events are cut down to their envelope (the full event is in the other feeds).
_UDP_MAX = 8192


class SendError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Sender(Protocol):
    sink: str

    def send(self, events: list[dict[str, Any]]) -> int | None:
        """Deliver or raise SendError; returns the HTTP status when there is one."""


class WebhookSender:
    def __init__(self, config: Webhook):
        self.config = config
        self.sink = config.sink

    def send(self, events: list[dict[str, Any]]) -> int | None:
        parts = urlsplit(self.config.url)
        body = formats.webhook_body(str(uuid.uuid4()), events, iso(time.time()))
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": f"leakcheck-collector/{__version__}",
                   formats.TIMESTAMP_HEADER: str(stamp),
                   formats.SIGNATURE_HEADER: formats.signature(self.config.secret, stamp, body)}
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.config.timeout_s,
                context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.config.timeout_s)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(64 * 1024)
        except (OSError, http.client.HTTPException) as exc:
            raise SendError(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise SendError(f"HTTP {response.status} {response.reason}", response.status)
        return response.status


class JsonLinesSender:
    def __init__(self, config: JsonLines):
        self.config = config
        self.sink = config.sink

    def send(self, events: list[dict[str, Any]]) -> int | None:
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode("utf-8")
        try:
            fd = os.open(self.config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SendError(f"{self.config.path}: {exc}") from None
        return None


class SyslogSender:
    def __init__(self, config: Syslog):
        self.config = config
        self.sink = config.sink
        self.hostname = config.hostname or socket.gethostname()

    def lines(self, events: list[dict[str, Any]]) -> list[bytes]:
        out = []
        for event in events:
            line = formats.syslog_line(event, self.config.facility, self.hostname, self.config.format)
            if self.config.transport == "udp" and len(line) > _UDP_MAX:
                slim = dict(event, details={"truncated": True,
                                            "finding_ids": event.get("details", {}).get("finding_ids", [])})
                slim.pop("ocsf", None)
                line = formats.syslog_line(slim, self.config.facility, self.hostname, self.config.format)
            out.append(line)
        return out

    def send(self, events: list[dict[str, Any]]) -> int | None:
        lines = self.lines(events)
        try:
            if self.config.transport == "udp":
                self._udp(lines)
            else:
                self._tcp(lines)
        except OSError as exc:
            raise SendError(f"{self.config.transport}://{self.config.host}:{self.config.port}: {exc}") from None
        return None

    def _udp(self, lines: list[bytes]) -> None:
        info = socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as sock:
            for line in lines:
                sock.sendto(line, info[4])

    def _tcp(self, lines: list[bytes]) -> None:
        with socket.create_connection((self.config.host, self.config.port), timeout=5) as sock:
            # RFC 6587 3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
            sock.sendall(b"".join(str(len(line)).encode("ascii") + b" " + line for line in lines))


def sender(config: Webhook | JsonLines | Syslog) -> Sender:
    if isinstance(config, Webhook):
        return WebhookSender(config)
    if isinstance(config, JsonLines):
        return JsonLinesSender(config)
    return SyslogSender(config)
