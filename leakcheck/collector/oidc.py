"""OIDC sign-in for the web page (issue 13), optional: the authorization-code
flow with PKCE (RFC 7636, S256) against a configured issuer.

The issuer's discovery document names its endpoints; the ID token from the
token endpoint is checked before anyone is signed in: RS256/ES256 signature
by a key from the issuer's JWKS (by `kid`), `iss` equal to the configured
issuer, `aud` containing our client id, `exp`/`iat` present and current,
and `nonce` equal to the one this browser was given. The role comes from a
claim (default `roles`, a string or a list): the admin value makes an
admin, the analyst value an analyst, anything else is refused. A signed-in
user gets an ordinary web session tied to a token row labelled
`oidc:<issuer>#<sub>` (its value is never shown to anyone), so revoking
that row ends the session, and the audit log names the user.

State, nonce and the PKCE verifier travel in a short-lived HttpOnly cookie
(SameSite=Lax, path /oidc: it must come back on the issuer's redirect),
never in server memory: any replica can finish a sign-in another started.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

# Signature algorithms accepted for ID tokens (never "none", never HMAC with a public key).
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "PS256"]
# Discovery and keys are fetched again after this long (key rotation).
CACHE_S = 300.0


class OidcError(Exception):
    """Sign-in refused: the message says why (shown to the user, logged)."""


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str = ""
    redirect_uri: str = ""  # default: this collector's /oidc/callback as the browser reached it
    role_claim: str = "roles"
    admin_value: str = "leakcheck-admin"
    analyst_value: str = "leakcheck-analyst"
    scope: str = "openid profile"


@dataclass(frozen=True)
class Pending:
    """What the browser carries between /oidc/login and /oidc/callback."""
    state: str
    nonce: str
    verifier: str


def new_pending() -> Pending:
    return Pending(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48))


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


class OidcClient:
    def __init__(self, settings: OidcSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._discovery: tuple[float, dict[str, Any]] | None = None
        self._jwks: Any = None

    def discovery(self) -> dict[str, Any]:
        with self._lock:
            if self._discovery and time.monotonic() - self._discovery[0] < CACHE_S:
                return self._discovery[1]
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = _get_json(url)
        # OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one asked.
        if doc.get("issuer") != self.settings.issuer:
            raise OidcError(f"discovery document names issuer {doc.get('issuer')!r}, not {self.settings.issuer!r}")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str):
                raise OidcError(f"discovery document lacks {key}")
        import jwt
        with self._lock:
            self._discovery = (time.monotonic(), doc)
            self._jwks = jwt.PyJWKClient(doc["jwks_uri"], cache_keys=True, lifespan=int(CACHE_S), timeout=10)
        return doc

    def authorize_url(self, pending: Pending, redirect_uri: str) -> str:
        doc = self.discovery()
        query = urlencode({"response_type": "code", "client_id": self.settings.client_id,
                           "redirect_uri": redirect_uri, "scope": self.settings.scope, "state": pending.state,
                           "nonce": pending.nonce, "code_challenge": challenge(pending.verifier),
                           "code_challenge_method": "S256"})
        sep = "&" if "?" in doc["authorization_endpoint"] else "?"
        return doc["authorization_endpoint"] + sep + query

    def exchange(self, code: str, pending: Pending, redirect_uri: str) -> dict[str, Any]:
        """The code for tokens at the token endpoint; the verified ID token's claims."""
        import requests

        doc = self.discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.settings.client_id, "code_verifier": pending.verifier}
        auth = (self.settings.client_id, self.settings.client_secret) if self.settings.client_secret else None
        try:
            response = requests.post(doc["token_endpoint"], data=form, auth=auth, timeout=10)
        except requests.RequestException as exc:
            raise OidcError(f"token endpoint unreachable: {exc}") from None
        if response.status_code != 200:
            raise OidcError(f"token endpoint answered {response.status_code}: {response.text[:200]}")
        try:
            id_token = response.json()["id_token"]
        except (ValueError, KeyError, TypeError):
            raise OidcError("token endpoint answered without an id_token") from None
        return self.verify(id_token, pending.nonce)

    def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        import jwt

        self.discovery()
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token)
            claims = jwt.decode(id_token, key.key, algorithms=ALGORITHMS, audience=self.settings.client_id,
                                issuer=self.settings.issuer, leeway=30,
                                options={"require": ["iss", "sub", "aud", "exp", "iat", "nonce"]})
        except jwt.PyJWKClientError as exc:
            raise OidcError(f"ID token signed by no key of the issuer: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise OidcError(f"ID token refused: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce")), nonce):
            raise OidcError("ID token nonce does not match this sign-in (replayed?)")
        return claims

    def role(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.settings.role_claim)
        values = value if isinstance(value, list) else [value]
        if self.settings.admin_value in values:
            return "admin"
        if self.settings.analyst_value in values:
            return "analyst"
        raise OidcError(f"no leakcheck role in the {self.settings.role_claim!r} claim")

    def label(self, claims: dict[str, Any]) -> str:
        return f"oidc:{self.settings.issuer}#{claims['sub']}"[:200]


def _get_json(url: str) -> dict[str, Any]:
    import requests
    try:
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        doc = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise OidcError(f"cannot read {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise OidcError(f"{url} is not a JSON object")
    return doc
