"""The `[alerts]` settings: where events go and when they fire.

Given as a table of the collector's settings file (`collector serve
--config FILE`, TOML) and/or `collector serve` options; the merged result
travels to workers as plain data inside Settings.alerts, so this module
validates a dict. Unknown keys are an error naming the key. Webhook
secrets are files (issue 9: no secret in the environment or on a command
line); they are read when the settings are validated, so a missing or short
secret stops the collector at start, not at the first event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from leakcheck.collector.settings import read_secret
from leakcheck.errors import ConfigError

SYSLOG_FORMATS = ("rfc5424", "cef")
# RFC 5424 section 6.2.1 facility codes by name.
FACILITIES = {"kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10,
              **{f"local{n}": 16 + n for n in range(8)}}

_TOP = {"enabled", "batch_interval", "poll_interval", "stale_intervals", "reconnect_bound", "retry_max",
        "max_batch", "lease_ttl", "keep_days", "webhook", "jsonl", "syslog"}
_WEBHOOK = {"name", "url", "secret_file", "timeout"}
_JSONL = {"path"}
_SYSLOG = {"name", "address", "format", "facility", "hostname"}


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    secret: str
    timeout_s: float = 5.0

    @property
    def sink(self) -> str:
        return f"webhook:{self.name}"


@dataclass(frozen=True)
class JsonLines:
    path: str

    @property
    def sink(self) -> str:
        return "jsonl"


@dataclass(frozen=True)
class Syslog:
    name: str
    transport: str  # udp | tcp
    host: str
    port: int
    format: str  # rfc5424 | cef
    facility: int
    hostname: str  # HOSTNAME field; empty = this machine's name

    @property
    def sink(self) -> str:
        return f"syslog:{self.name}"


@dataclass(frozen=True)
class AlertConfig:
    enabled: bool = False
    # Events are gathered for this long per sink, then sent as one batch.
    batch_interval_s: float = 2.0
    poll_interval_s: float = 1.0
    # Stale: no report for this many agent intervals (Settings.device_interval_s).
    stale_intervals: float = 2.0
    # Reconnect slower than this (seconds, the reconnect probe's measurement) fires an event.
    reconnect_bound_s: float = 30.0
    # Retry backoff doubles from 1 s up to this cap.
    retry_max_s: float = 300.0
    max_batch: int = 500
    lease_ttl_s: float = 30.0
    # Delivered events and delivery-log rows older than this are deleted (hourly).
    keep_days: float = 90.0
    webhooks: tuple[Webhook, ...] = ()
    jsonl: JsonLines | None = None
    syslogs: tuple[Syslog, ...] = ()

    @property
    def sinks(self) -> tuple[Webhook | JsonLines | Syslog, ...]:
        return (*self.webhooks, *((self.jsonl,) if self.jsonl else ()), *self.syslogs)


def parse(data: dict[str, Any]) -> AlertConfig:
    """Validate the `[alerts]` table (or the equivalent built from options)."""
    _known(data, _TOP, "alerts")
    webhooks = tuple(_webhook(w, n) for n, w in enumerate(_list(data.get("webhook", []), "alerts.webhook")))
    syslogs = tuple(_syslog(s, n) for n, s in enumerate(_list(data.get("syslog", []), "alerts.syslog")))
    jsonl = None
    if data.get("jsonl"):
        table = data["jsonl"]
        if not isinstance(table, dict):
            raise ConfigError("must be a table with `path`", key="alerts.jsonl")
        _known(table, _JSONL, "alerts.jsonl")
        jsonl = JsonLines(_text(table.get("path"), "alerts.jsonl.path"))
        if "\0" in jsonl.path:
            raise ConfigError("not a file name", key="alerts.jsonl.path")
    names = [s.sink for s in (*webhooks, *syslogs)]
    if len(set(names)) != len(names):
        raise ConfigError("two sinks share a name", key="alerts")
    sinks = bool(webhooks or syslogs or jsonl)
    config = AlertConfig(
        enabled=_bool(data.get("enabled", sinks), "alerts.enabled"),
        batch_interval_s=_number(data.get("batch_interval", 2.0), "alerts.batch_interval", 0.1, 3600),
        poll_interval_s=_number(data.get("poll_interval", 1.0), "alerts.poll_interval", 0.1, 60),
        stale_intervals=_number(data.get("stale_intervals", 2.0), "alerts.stale_intervals", 1, 1000),
        reconnect_bound_s=_number(data.get("reconnect_bound", 30.0), "alerts.reconnect_bound", 0.1, 86400),
        retry_max_s=_number(data.get("retry_max", 300.0), "alerts.retry_max", 1, 86400),
        max_batch=int(_number(data.get("max_batch", 500), "alerts.max_batch", 1, 10000)),
        lease_ttl_s=_number(data.get("lease_ttl", 30.0), "alerts.lease_ttl", 2, 3600),
        keep_days=_number(data.get("keep_days", 90.0), "alerts.keep_days", 1, 36500),
        webhooks=webhooks, jsonl=jsonl, syslogs=syslogs)
    return config


def _webhook(data: Any, n: int) -> Webhook:
    key = f"alerts.webhook[{n}]"
    if not isinstance(data, dict):
        raise ConfigError("must be a table", key=key)
    _known(data, _WEBHOOK, key)
    url = _text(data.get("url"), key + ".url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ConfigError(f"{url!r}: {exc}", key=key + ".url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an http(s) URL", key=key + ".url")
    secret_file = _text(data.get("secret_file"), key + ".secret_file")
    if "\0" in secret_file:
        raise ConfigError("not a file name", key=key + ".secret_file")
    return Webhook(name=str(data.get("name") or parts.hostname), url=url,
                   secret=read_secret(secret_file, minimum=16, what="webhook secret"),
                   timeout_s=_number(data.get("timeout", 5.0), key + ".timeout", 0.5, 120))


def _syslog(data: Any, n: int) -> Syslog:
    key = f"alerts.syslog[{n}]"
    if not isinstance(data, dict):
        raise ConfigError("must be a table", key=key)
    _known(data, _SYSLOG, key)
    address = _text(data.get("address"), key + ".address")
    try:
        parts = urlsplit(address)
        port = parts.port or 514
    except ValueError:
        raise ConfigError(f"{address!r}: bad port", key=key + ".address") from None
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise ConfigError(f"{address!r}: use udp://HOST:PORT or tcp://HOST:PORT", key=key + ".address")
    fmt = data.get("format", "rfc5424")
    if fmt not in SYSLOG_FORMATS:
        raise ConfigError(f"{fmt!r}: one of {', '.join(SYSLOG_FORMATS)}", key=key + ".format")
    facility = data.get("facility", "authpriv")
    if facility not in FACILITIES:
        raise ConfigError(f"{facility!r}: one of {', '.join(FACILITIES)}", key=key + ".facility")
    hostname = data.get("hostname", "")
    if not isinstance(hostname, str) or len(hostname) > 255 or any(c <= " " or c > "~" for c in hostname):
        raise ConfigError("printable ASCII without spaces, at most 255 characters", key=key + ".hostname")
    return Syslog(name=str(data.get("name") or f"{parts.hostname}:{port}"), transport=parts.scheme,
                  host=parts.hostname, port=port, format=fmt, facility=FACILITIES[facility], hostname=hostname)


def _known(data: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(allowed))})", key=f"{where}.{key}")


def _list(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise ConfigError("must be a table or an array of tables", key=key)
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError("required (a non-empty string)", key=key)
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("must be true or false", key=key)
    return value


def _number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"must be a number from {low:g} to {high:g}", key=key)
    return float(value)
