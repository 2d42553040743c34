"""Collector settings, validated once at start-up and passed to create_app."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from leakcheck.errors import ConfigError

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
    # Cookie-based sessions for the web page are marked Secure behind TLS.
    secure_cookies: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ConfigError("must be at least 1024", key="max_body_bytes")
        if self.rate_limit < 1 or self.rate_window_s < 1:
            raise ConfigError("must be positive", key="rate_limit")
        if self.device_interval_s < 1:
            raise ConfigError("must be positive", key="device_interval_s")

    @property
    def url(self) -> str:
        return database_url(self.db)


def read_secret(path: str | None) -> str:
    if not path:
        return ""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read enrollment secret: {exc}", path=path) from None
    if len(secret) < 16:
        raise ConfigError("enrollment secret must be at least 16 characters", path=path)
    return secret
