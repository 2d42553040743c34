"""Tokens: random, shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

DEVICE_PREFIX = "lcd_"
ANALYST_PREFIX = "lca_"


def new_token(kind: str) -> str:
    prefix = DEVICE_PREFIX if kind == "device" else ANALYST_PREFIX
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast unsalted hash is enough: there
    # is nothing to brute-force, and lookups stay one indexed equality.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def secret_matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def new_session() -> str:
    return "lcs_" + secrets.token_urlsafe(32)
