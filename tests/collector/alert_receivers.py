"""Real receivers on loopback for the alert tests: an HTTP webhook endpoint
and a syslog UDP socket, each recording what arrived and when; plus strict
parsers for RFC 5424 and CEF so the tests check the grammar, not a sample."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class Call:
    def __init__(self, at: float, headers: dict[str, str], body: bytes):
        self.at = at
        self.headers = headers
        self.body = body

    @property
    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.body)["events"]


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1; `stop()` leaves the port refusing
    connections (a receiver that is down) and `start()` listens again on it."""

    def __init__(self, port: int = 0, status: int = 204):
        self.calls: list[Call] = []
        self.status = status
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port or _free_port()

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.calls.append(Call(time.time(), {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for c in self.calls for e in c.events]


class UdpReceiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []

    def drain(self, until: Callable[[list[bytes]], bool], timeout: float = 10.0) -> list[bytes]:
        deadline = time.time() + timeout
        while time.time() < deadline and not until(self.datagrams):
            try:
                self.datagrams.append(self.sock.recv(65535))
            except socket.timeout:
                pass
        return self.datagrams

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- RFC 5424, section 6 ABNF, as a strict parser ----------------------------------

_PRINTUSASCII = r"[\x21-\x7e]"
_NAME = r"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}"  # SD-NAME: PRINTUSASCII except '=', SP, ']', '"'
_TIMESTAMP = (r"(?:-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2}))")
_HEADER = re.compile(
    rf"<(?P<pri>\d{{1,3}})>(?P<version>[1-9]\d{{0,2}}) (?P<timestamp>{_TIMESTAMP}) "
    rf"(?P<hostname>-|{_PRINTUSASCII}{{1,255}}) (?P<app>-|{_PRINTUSASCII}{{1,48}}) "
    rf"(?P<procid>-|{_PRINTUSASCII}{{1,128}}) (?P<msgid>-|{_PRINTUSASCII}{{1,32}}) ")
_PARAM = re.compile(rf' (?P<name>{_NAME})="(?P<value>(?:[^"\\\]]|\\["\\\]])*)"', re.S)
_ELEMENT_ID = re.compile(rf"\[(?P<id>{_NAME})")


def parse_rfc5424(datagram: bytes) -> dict[str, Any]:
    """HEADER SP STRUCTURED-DATA [SP MSG]; raises ValueError on any deviation."""
    text = datagram.decode("utf-8")
    head = _HEADER.match(text)
    if not head:
        raise ValueError(f"bad HEADER: {text[:120]!r}")
    pri = int(head["pri"])
    if pri > 191 or (len(head["pri"]) > 1 and head["pri"][0] == "0"):
        raise ValueError(f"PRI out of range: {pri}")
    rest = text[head.end():]
    sd: dict[str, dict[str, str]] = {}
    if rest.startswith("-"):
        rest = rest[1:]
    else:
        if not rest.startswith("["):
            raise ValueError("STRUCTURED-DATA must be '-' or start with '['")
        while rest.startswith("["):
            element = _ELEMENT_ID.match(rest)
            if not element:
                raise ValueError(f"bad SD-ID in {rest[:60]!r}")
            params: dict[str, str] = {}
            rest = rest[element.end():]
            while True:
                param = _PARAM.match(rest)
                if not param:
                    break
                params[param["name"]] = re.sub(r'\\(["\\\]])', r"\1", param["value"])
                rest = rest[param.end():]
            if not rest.startswith("]"):
                raise ValueError(f"SD-ELEMENT not closed: {rest[:60]!r}")
            rest = rest[1:]
            sd[element["id"]] = params
    if rest and not rest.startswith(" "):
        raise ValueError("MSG must follow STRUCTURED-DATA after one space")
    msg = rest[1:] if rest else ""
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    return {"facility": pri // 8, "severity": pri % 8, "version": int(head["version"]),
            "timestamp": head["timestamp"], "hostname": head["hostname"], "app": head["app"],
            "procid": head["procid"], "msgid": head["msgid"], "sd": sd, "msg": msg}


def parse_cef(line: str) -> dict[str, Any]:
    """CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|Extension (strict escapes)."""
    if not line.startswith("CEF:"):
        raise ValueError("not CEF")
    fields, current, i = [], "", 4
    while len(fields) < 7:
        if i >= len(line):
            raise ValueError("truncated CEF header")
        ch = line[i]
        if ch == "\\":
            nxt = line[i + 1:i + 2]
            if nxt not in ("\\", "|"):
                raise ValueError(f"bad header escape \\{nxt}")
            current += nxt
            i += 2
            continue
        if ch == "|":
            fields.append(current)
            current = ""
        else:
            current += ch
        i += 1
    version, vendor, product, dversion, sig, name, severity = fields
    if version != "0" or not severity.isdigit() or not 0 <= int(severity) <= 10:
        raise ValueError(f"bad version/severity {version!r}/{severity!r}")
    ext = _cef_extension(line[i:])
    return {"vendor": vendor, "product": product, "version": dversion, "signature": sig, "name": name,
            "severity": int(severity), "ext": ext}


def _cef_extension(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for match in re.finditer(r"(?:^| )([A-Za-z0-9_]+)=((?:[^=\\]|\\[\\=nr])*?)(?= [A-Za-z0-9_]+=|$)", text):
        value = re.sub(r"\\([\\=nr])", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), match[2])
        out[match[1]] = value
    rebuilt = " ".join(f"{k}=" for k in out)
    if len(out) != text.count("=") - text.count("\\="):
        raise ValueError(f"unescaped '=' in CEF extension ({rebuilt})")
    return out


class TcpSyslogReceiver:
    """A TCP syslog server (RFC 6587 octet counting): each frame is `LEN SP MSG`."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.frames: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            self.frames += split_octet_counted(data)

    def close(self) -> None:
        self.sock.close()


def split_octet_counted(data: bytes) -> list[bytes]:
    """RFC 6587 3.4.1: MSG-LEN (NONZERO-DIGIT *DIGIT) SP SYSLOG-MSG, strictly."""
    frames = []
    while data:
        match = re.match(rb"([1-9][0-9]*) ", data)
        if not match:
            raise ValueError(f"bad frame header: {data[:20]!r}")
        length = int(match[1])
        body = data[match.end():match.end() + length]
        if len(body) != length:
            raise ValueError("truncated frame")
        frames.append(body)
        data = data[match.end() + length:]
    return frames
