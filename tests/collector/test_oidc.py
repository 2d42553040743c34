"""Issue 13: OIDC sign-in for the web page against a small OpenID provider
written here: loopback, real HTTP (ThreadingHTTPServer), real RSA keys,
a real discovery document, JWKS, authorization and token endpoints that
check PKCE (S256) themselves. The collector talks to it over HTTP as it
would to any issuer; nothing of the collector is mocked. Each refusal case
breaks one thing in the provider or the browser's hand and expects no
session."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "leakcheck-web"


class Provider:
    """A minimal OpenID provider. `faults` changes what it issues."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not in the JWKS
        self.codes: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, Any] = {"sub": "alice", "roles": ["leakcheck-admin"]}
        self.faults: set[str] = set()
        self.token_requests = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if url.path == "/.well-known/openid-configuration":
                    self._json(provider.discovery())
                elif url.path == "/jwks":
                    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key()))
                    self._json({"keys": [dict(public, kid="k1", use="sig", alg="RS256")]})
                elif url.path == "/authorize":
                    self._authorize({k: v[0] for k, v in parse_qs(url.query).items()})
                else:
                    self.send_error(404)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if urlsplit(self.path).path != "/token":
                    self.send_error(404)
                    return
                provider.token_requests += 1
                grant = provider.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if (grant is None or form.get("grant_type") != "authorization_code"
                        or form.get("redirect_uri") != grant["redirect_uri"] or form.get("client_id") != CLIENT_ID
                        or expected != grant["challenge"]):
                    self._json({"error": "invalid_grant"}, 400)
                    return
                self._json({"access_token": "opaque", "token_type": "Bearer", "id_token": provider.id_token(grant)})

            def _authorize(self, q: dict[str, str]) -> None:
                # A user who is already signed in at the provider and consents at once.
                if (q.get("response_type") != "code" or q.get("client_id") != CLIENT_ID
                        or q.get("code_challenge_method") != "S256" or "openid" not in q.get("scope", "").split()):
                    self.send_error(400, "bad authorization request")
                    return
                code = secrets.token_urlsafe(16)
                provider.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"],
                                        "redirect_uri": q["redirect_uri"]}
                self.send_response(302)
                self.send_header("Location", q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}))
                self.end_headers()

            def _json(self, doc: Any, status: int = 200) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"], "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"]}

    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                  **self.claims}
        if "audience" in self.faults:
            claims["aud"] = "someone-else"
        if "issuer" in self.faults:
            claims["iss"] = "https://impostor.example"
        if "expired" in self.faults:
            claims.update(iat=now - 3600, exp=now - 600)
        if "nonce" in self.faults:
            claims["nonce"] = "a-nonce-from-another-sign-in"
        key = self.other_key if "signature" in self.faults else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.server.shutdown()


@pytest.fixture
def web(provider, tmp_path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings
    app = create_app(Settings(db=str(tmp_path / "c.sqlite3"), oidc_issuer=provider.issuer, oidc_client_id=CLIENT_ID))
    with TestClient(app) as client:
        yield client
    app.state.store.engine.dispose()


def sign_in(web, tamper_state: bool = False, tamper_verifier: bool = False):  # type: ignore[no-untyped-def]
    """The browser's part: collector -> issuer (real HTTP) -> collector."""
    start = web.get("/oidc/login", follow_redirects=False)
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    if tamper_verifier:  # a stolen code replayed by someone without this browser's verifier
        state, nonce, _ = start.cookies["leakcheck_oidc"].split(".")
        web.cookies.set("leakcheck_oidc", f"{state}.{nonce}.not-the-verifier", path="/oidc")
    back = requests.get(authorize, allow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    assert callback.path == "/oidc/callback"
    query = callback.query.replace("state=", "state=forged") if tamper_state else callback.query
    return web.get(f"/oidc/callback?{query}", follow_redirects=False)


def test_admin_signs_in_with_oidc(web, provider):
    assert "id=sso" in web.get("/login").text
    done = sign_in(web)
    assert done.status_code == 200 and "leakcheck_session" in done.cookies, done.text
    assert web.get("/", follow_redirects=False).status_code == 200
    log = web.get("/api/v1/admin/audit")  # the session is an admin's
    assert log.status_code == 200
    tokens = web.get("/api/v1/admin/tokens").json()
    assert [t["kind"] for t in tokens if t["label"] == f"oidc:{provider.issuer}#alice"] == ["admin"]
    # The same user again: the same token row, a new session.
    web.cookies.clear()
    assert sign_in(web).status_code == 200
    assert len([t for t in web.get("/api/v1/admin/tokens").json() if t["label"].startswith("oidc:")]) == 1


def test_analyst_role_reads_but_does_not_administer(web, provider):
    provider.claims = {"sub": "bob", "roles": "leakcheck-analyst"}
    assert sign_in(web).status_code == 200
    assert web.get("/").status_code == 200
    assert web.get("/api/v1/admin/audit").status_code == 403


@pytest.mark.parametrize("fault", ["audience", "issuer", "expired", "nonce", "signature", "no-role",
                                   "state", "verifier"])
def test_refused_sign_ins_open_no_session(web, provider, fault):
    if fault == "no-role":
        provider.claims = {"sub": "mallory", "roles": ["staff"]}
    elif fault not in ("state", "verifier"):
        provider.faults.add(fault)
    done = sign_in(web, tamper_state=fault == "state", tamper_verifier=fault == "verifier")
    assert done.status_code == 403, done.text
    assert "leakcheck_session" not in done.cookies
    assert web.get("/", follow_redirects=False).headers["location"] == "/login"
    if fault == "state":
        assert provider.token_requests == 0  # refused before the code is even used
    if fault == "verifier":
        assert provider.token_requests == 1 and "invalid_grant" in done.text  # the provider's own PKCE check
