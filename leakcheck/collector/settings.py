"""Collector settings, validated once at start-up and passed to create_app."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from leakcheck.errors import ConfigError

if TYPE_CHECKING:
    from leakcheck.collector.alerts.config import AlertConfig

DEFAULT_DB = "/var/lib/leakcheck/collector.sqlite3"


def database_url(db: str) -> str:
    """`--db` accepts a plain path (SQLite) or a postgresql:// URL."""
    if db.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        # SQLAlchemy needs the driver named; psycopg 3 is the one we ship.
        return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", db)
    if db.startswith("sqlite:///"):
        return db
    if "://" in db:
        raise ConfigError(f"{db!r}: use a file path (SQLite) or a postgresql:// URL", key="--db")
    return "sqlite:///" + str(Path(db).absolute())


@dataclass(frozen=True)
class Settings:
    db: str = DEFAULT_DB
    # The fleet enrollment secret; empty = enrollment is closed.
    enroll_secret: str = ""
    max_body_bytes: int = 256 * 1024
    # Per-device submissions allowed per window before 429 + Retry-After.
    rate_limit: int = 60
    rate_window_s: int = 60
    # Default agent interval; a device is stale after twice this without a report.
    device_interval_s: int = 15 * 60
    # Per-device storage budget: bytes of stored report JSON per UTC day.
    device_daily_bytes: int = 16 << 20
    # Report rows (full reports, heartbeats, findings) older than this many
    # days are deleted in the background; 0 keeps everything. Each device's
    # current state report is kept whatever its age.
    retention_days: int = 0
    # How often the background maintenance runs (retention; PostgreSQL day
    # partitions created ahead).
    maintenance_interval_s: int = 3600
    # Cookie-based sessions for the web page are marked Secure behind TLS.
    secure_cookies: bool = False
    session_lifetime_s: int = 12 * 3600
    # Wrong enrollment secrets allowed per client address per minute (per replica).
    enroll_failures_per_minute: int = 10
    # Secrets as files (workers read them; never passed in the environment).
    enroll_secret_file: str = ""
    db_password_file: str = ""
    # The VPN client advisory table (leakcheck.advisories/1) the admin placed here; agents
    # fetch it from GET /api/v1/advisories. Empty = none served (agents keep the shipped one).
    advisories_file: str = ""
    # Optional OIDC sign-in for the web page (leakcheck.collector.oidc); empty issuer = off.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: str = ""
    oidc_redirect_uri: str = ""
    oidc_role_claim: str = "roles"
    oidc_admin_value: str = "leakcheck-admin"
    oidc_analyst_value: str = "leakcheck-analyst"
    extra: dict[str, str] = field(default_factory=dict)
    # Issue 13: the `[alerts]` table (webhooks, SIEM feeds, bounds), as plain
    # data so it reaches workers in the settings file; validated here, read by
    # leakcheck.collector.alerts.config (secrets stay in their own files).
    alerts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ConfigError("must be at least 1024", key="max_body_bytes")
        if self.rate_limit < 1 or self.rate_window_s < 1:
            raise ConfigError("must be positive", key="rate_limit")
        if self.retention_days < 0 or self.maintenance_interval_s < 1:
            raise ConfigError("must not be negative", key="retention_days")
        if self.device_interval_s < 1:
            raise ConfigError("must be positive", key="device_interval_s")
        if self.alerts:
            self.alert_config()
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_issuer.startswith(("https://", "http://"))):
            raise ConfigError("needs an http(s) issuer URL and a client id", key="oidc_issuer")

    def alert_config(self) -> "AlertConfig":
        from leakcheck.collector.alerts.config import parse
        return parse(self.alerts)

    def oidc(self):  # type: ignore[no-untyped-def]
        """The OIDC settings, or None when sign-in by OIDC is off."""
        if not self.oidc_issuer:
            return None
        from leakcheck.collector.oidc import OidcSettings
        secret = read_secret(self.oidc_client_secret_file, minimum=1, what="OIDC client secret") \
            if self.oidc_client_secret_file else ""
        return OidcSettings(issuer=self.oidc_issuer, client_id=self.oidc_client_id, client_secret=secret,
                            redirect_uri=self.oidc_redirect_uri, role_claim=self.oidc_role_claim,
                            admin_value=self.oidc_admin_value, analyst_value=self.oidc_analyst_value)

    @property
    def url(self) -> str:
        url = database_url(self.db)
        if self.db_password_file and url.startswith("postgresql"):
            url = with_password(url, read_secret(self.db_password_file, minimum=1, what="database password"))
        return url

    def resolved(self) -> "Settings":
        """These settings with the enrollment secret read from its file."""
        if self.enroll_secret_file and not self.enroll_secret:
            return replace(self, enroll_secret=read_secret(self.enroll_secret_file))
        return self


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def read_secret(path: str | None, minimum: int = 16, what: str = "enrollment secret") -> str:
    if not path:
        return ""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc}", path=path) from None
    if len(secret) < minimum:
        raise ConfigError(f"{what} must be at least {minimum} characters", path=path)
    return secret
