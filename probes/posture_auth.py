"""posture-auth: which VPN protocol each tunnel uses, how the device
authenticates, and where its private key lives.

For every VPN client found on the device (strongSwan connections over its
vici socket, running OpenVPN and openconnect clients with their command
line and config file, WireGuard interfaces, NetworkManager VPN profiles):

- the protocol (ipsec, openvpn, tls, wireguard) must be one of
  `posture.allowed_protocols`, else `posture-auth.protocol-not-allowed`;
- the local authentication (certificate, public-key, psk, password, eap:
  strongSwan's `class` per local auth round, OpenVPN's cert/key, pkcs12,
  pkcs11-id, auth-user-pass or static key, NetworkManager's vpn.data)
  must all be in `posture.allowed_auth`, else
  `posture-auth.auth-not-allowed` (a pre-shared key cannot be revoked for
  one device and is shared by all of them; a password can be phished);
- a private key in a file (not a TPM, smart card or PKCS#11 token) is
  `posture-auth.key-in-file`: a note, or a warning with
  `posture.require_hardware_keys = true`.

Judged are the connections up now; when none is, every configured one
(how the device would connect). `posture-auth.tunnels` lists every client
and connection with what was found and where.
Nothing found: skipped ("no VPN client found"), i.e. not checked.
Reads through `ctx.clients` (leakcheck/vpnclients.py), once per run.
"""

from __future__ import annotations

from leakcheck.probe import Effect, Finding, Probe, ProbeContext, ProbeSkipped, Severity
from leakcheck.report import Guidance
from leakcheck.vpnclients import TunnelConfig

WEAK_AUTH = {"psk": Severity.HIGH, "password": Severity.HIGH, "eap": Severity.MEDIUM, "unknown": Severity.LOW}
AUTH_WORDS = {"certificate": "a certificate", "public-key": "a raw key pair (no certificate)",
              "psk": "a pre-shared key", "password": "a password", "eap": "EAP (a user secret)",
              "unknown": "an authentication leakcheck could not determine"}


class PostureAuthProbe(Probe):
    __doc__ = __doc__
    name = "posture-auth"
    leak_class = "VPN protocol, authentication and private key storage against the organisation's policy"
    finding_ids = ("posture-auth.protocol-not-allowed", "posture-auth.auth-not-allowed", "posture-auth.key-in-file",
                   "posture-auth.tunnels")
    checks = ("protocol", "authentication")
    timeout_s = 5.0

    def run(self, ctx: ProbeContext) -> list[Finding]:
        facts = ctx.clients.facts(ctx.state)
        if not facts.tunnels:
            raise ProbeSkipped("no VPN client found" + (f" ({'; '.join(facts.notes)})" if facts.notes else ""))
        policy = ctx.config.section("posture")
        findings: list[Finding] = []
        for tunnel in facts.judged():
            findings += self._protocol(tunnel, policy["allowed_protocols"])
            findings += self._auth(tunnel, policy["allowed_auth"])
            findings += self._keys(tunnel, policy["require_hardware_keys"])
        findings.append(self._inventory(facts.tunnels, facts.notes))
        return findings

    def _protocol(self, tunnel: TunnelConfig, allowed: list[str]) -> list[Finding]:
        if tunnel.protocol in allowed:
            return []
        return [self.finding(
            "posture-auth.protocol-not-allowed", Severity.MEDIUM,
            f"{tunnel.client} connection {tunnel.name} uses {tunnel.protocol}, which the policy does not allow "
            f"(allowed: {', '.join(allowed) or 'none'}).",
            {**tunnel.evidence(), "allowed_protocols": allowed},
            f"Move {tunnel.name} to an allowed protocol (NCSC: IPsec with IKEv2, or a TLS VPN where IPsec cannot "
            "be used), or add it to posture.allowed_protocols if the organisation accepts it.",
            Guidance.PROTOCOL, Effect.WARN)]

    def _auth(self, tunnel: TunnelConfig, allowed: list[str]) -> list[Finding]:
        # "unknown" (the kernel's SAs, an OpenVPN config leakcheck could not read) is listed in
        # posture-auth.tunnels, not blamed: a warning must rest on what was seen.
        bad = [a for a in tunnel.auth if a not in allowed and a != "unknown"]
        if not bad:
            return []
        severity = max((WEAK_AUTH.get(a, Severity.MEDIUM) for a in bad), key=_rank)
        return [self.finding(
            "posture-auth.auth-not-allowed", severity,
            f"{tunnel.client} connection {tunnel.name} authenticates with "
            f"{' and '.join(AUTH_WORDS.get(a, a) for a in tunnel.auth)}; the policy allows only "
            f"{', '.join(allowed) or 'nothing'}.",
            {**tunnel.evidence(), "auth": list(tunnel.auth), "not_allowed": bad,
             "detail": list(tunnel.auth_detail), "allowed_auth": allowed},
            f"Authenticate {tunnel.name} with a device certificate (strongSwan: auth = pubkey with certs; "
            "OpenVPN: cert/key or pkcs11-id instead of secret/auth-user-pass), its key on a TPM or smart card; "
            "then remove the pre-shared key or password.",
            Guidance.AUTHENTICATION, Effect.WARN)]

    def _keys(self, tunnel: TunnelConfig, require_hardware: bool) -> list[Finding]:
        soft = [k for k in tunnel.keys if k.kind in ("file", "inline")]
        if not soft:
            return []
        where = ", ".join(k.where for k in soft)
        return [self.finding(
            "posture-auth.key-in-file", Severity.MEDIUM if require_hardware else Severity.LOW,
            f"The private key of {tunnel.client} connection {tunnel.name} is in a file ({where}), not on a TPM "
            "or smart card: anyone who copies it can connect as this device.",
            {**tunnel.evidence(), "keys": [k.evidence() for k in soft]},
            "Move the key to the TPM or a PKCS#11 token (OpenVPN: pkcs11-providers/pkcs11-id; strongSwan: a "
            "token in swanctl's secrets; NetworkManager: a pkcs11: URI) and delete the file.",
            Guidance.AUTHENTICATION, Effect.WARN if require_hardware else Effect.INFO)]

    def _inventory(self, tunnels: tuple[TunnelConfig, ...], notes: tuple[str, ...]) -> Finding:
        rows = [{**t.evidence(), "auth": list(t.auth), "detail": list(t.auth_detail),
                 "keys": [k.evidence() for k in t.keys], "notes": list(t.notes)} for t in tunnels]
        words = "; ".join(f"{t.name} ({t.client}): {t.protocol}, {'+'.join(t.auth) or '?'}" for t in tunnels)
        return self.finding("posture-auth.tunnels", Severity.INFO, f"VPN clients: {words}.",
                            {"tunnels": rows, "notes": list(notes)}, "", Guidance.PROTOCOL, Effect.INFO)


def _rank(severity: Severity) -> int:
    return [Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL].index(severity)
