"""posture-crypto: are the negotiated algorithms NCSC's cryptographic profile?

For every VPN client found (leakcheck/vpnclients.py through `ctx.clients`):

- strongSwan: the negotiated IKE SA (IKE version, encryption and key size,
  integrity, PRF, Diffie-Hellman group) and each CHILD SA (ESP encryption,
  integrity, PFS group), from vici `list-sas`;
- OpenVPN: the negotiated data channel cipher and auth digest and the
  control channel's TLS version and suite (from its log file), and what its
  configuration allows: `data-ciphers`, `data-ciphers-fallback`,
  `tls-version-min`, `tls-cipher`;
- WireGuard: a fixed suite (Curve25519, ChaCha20-Poly1305, BLAKE2s), in
  neither NCSC profile and not weak: a note.

Each algorithm is graded (leakcheck/cryptoprofile.py, which cites the NCSC
pages and dates): `prime`, `foundation`, `outside` or `weak`.
`posture.crypto_profile` (ncsc-prime, the default, or ncsc-foundation)
decides what passes:

- `posture-crypto.weak-algorithm` (warn, high): a legacy or broken
  algorithm negotiated or allowed, named (3DES, Blowfish, MD5, SHA-1 PRF or
  MAC, CBC with HMAC-SHA1, MODP-1024, TLS below 1.2...);
- `posture-crypto.outside-profile` (warn, medium): negotiated algorithms
  that are not weak but do not meet the profile (e.g. AES-CBC or MODP-2048
  under PRIME, ChaCha20-Poly1305, IKEv1);
- `posture-crypto.negotiated` (info): per tunnel, what is in use and its grade;
- `posture-crypto.not-observable` (info): tunnels whose negotiated algorithms
  could not be read (openconnect; OpenVPN logging only to the journal).
"""

from __future__ import annotations

from leakcheck import cryptoprofile as cp
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, ProbeSkipped, Severity
from leakcheck.report import Guidance
from leakcheck.vpnclients import Algorithms, TunnelConfig


class PostureCryptoProbe(Probe):
    __doc__ = __doc__
    name = "posture-crypto"
    leak_class = "VPN algorithms outside NCSC's IPsec/TLS cryptographic profiles"
    finding_ids = ("posture-crypto.weak-algorithm", "posture-crypto.outside-profile", "posture-crypto.negotiated",
                   "posture-crypto.not-observable")
    checks = ("crypto-profile",)
    timeout_s = 5.0

    def run(self, ctx: ProbeContext) -> list[Finding]:
        facts = ctx.clients.facts(ctx.state)
        if not facts.tunnels:
            raise ProbeSkipped("no VPN client found")
        profile = ctx.config.get("posture", "crypto_profile")
        findings: list[Finding] = []
        unobserved = []
        for tunnel in facts.judged():
            negotiated = [a for a in tunnel.algorithms if a.state == "negotiated"]
            if tunnel.protocol == "wireguard":
                findings.append(self._wireguard(tunnel))
                continue
            if not negotiated and tunnel.active:
                unobserved.append(tunnel)
            graded = [(layer, grade) for layer in tunnel.algorithms for grade in grades(layer)]
            findings += self._judge(tunnel, graded, profile)
        if unobserved:
            findings.append(self.finding(
                "posture-crypto.not-observable", Severity.INFO,
                "Negotiated algorithms not readable for: " + ", ".join(f"{t.name} ({t.client})" for t in unobserved)
                + "; only what their configuration allows was checked.",
                {"tunnels": [{**t.evidence(), "notes": list(t.notes)} for t in unobserved]},
                "OpenVPN: add `log /var/log/openvpn/NAME.log` (or --log) so the negotiated cipher can be read.",
                Guidance.CRYPTO_PROFILE, Effect.INFO))
        return findings

    def _judge(self, tunnel: TunnelConfig, graded: list[tuple[Algorithms, cp.Grade]], profile: str) -> list[Finding]:
        out = []
        weak = [(layer, g) for layer, g in graded if g.grade == cp.WEAK]
        outside = [(layer, g) for layer, g in graded
                   if layer.state == "negotiated" and g.grade != cp.WEAK and not g.meets(profile)]
        url = cp.TLS_URL if tunnel.protocol in ("openvpn", "tls") else cp.IPSEC_URL
        if weak:
            names = ", ".join(f"{g.algorithm} ({layer.layer}, {layer.state})" for layer, g in weak)
            out.append(self.finding(
                "posture-crypto.weak-algorithm", Severity.HIGH,
                f"{tunnel.client} connection {tunnel.name} uses or allows legacy cryptography: {names}.",
                {**tunnel.evidence(), "profile": profile, "profile_source": url,
                 "algorithms": [_row(layer, g) for layer, g in weak]},
                f"Remove {', '.join(dict.fromkeys(g.algorithm for _, g in weak))} from {tunnel.name} on both ends "
                f"and configure {cp.PROFILE_NAMES[profile]} ({url}): e.g. strongSwan proposals = "
                "aes256gcm16-prfsha384-ecp384, esp_proposals = aes256gcm16-ecp384; OpenVPN data-ciphers "
                "AES-256-GCM:AES-128-GCM, tls-version-min 1.2.",
                Guidance.CRYPTO_PROFILE, Effect.WARN))
        if outside:
            names = ", ".join(f"{g.algorithm} ({layer.layer}: {g.why})" for layer, g in outside)
            out.append(self.finding(
                "posture-crypto.outside-profile", Severity.MEDIUM,
                f"{tunnel.client} connection {tunnel.name} negotiated algorithms outside {profile}: {names}.",
                {**tunnel.evidence(), "profile": profile, "profile_source": url,
                 "algorithms": [_row(layer, g) for layer, g in outside]},
                f"Configure {cp.PROFILE_NAMES[profile]} ({url}) on both ends, or set posture.crypto_profile to the "
                "profile the organisation accepts.",
                Guidance.CRYPTO_PROFILE, Effect.WARN))
        negotiated = [(layer, g) for layer, g in graded if layer.state == "negotiated"]
        if negotiated:
            out.append(self.finding(
                "posture-crypto.negotiated", Severity.INFO,
                f"{tunnel.name} ({tunnel.client}) negotiated: "
                + ", ".join(f"{g.algorithm} [{g.grade}]" for _, g in negotiated) + ".",
                {**tunnel.evidence(), "profile": profile,
                 "algorithms": [_row(layer, g) for layer, g in negotiated],
                 "read_from": sorted({layer.source for layer, _ in negotiated})},
                "", Guidance.CRYPTO_PROFILE, Effect.INFO))
        return out

    def _wireguard(self, tunnel: TunnelConfig) -> Finding:
        return self.finding(
            "posture-crypto.negotiated", Severity.INFO,
            f"{tunnel.name} (WireGuard) uses its fixed suite (Curve25519, ChaCha20-Poly1305, BLAKE2s): not weak, "
            "but in neither NCSC IPsec nor TLS profile.",
            {**tunnel.evidence(), "algorithms": [{"layer": "data-channel", "state": "negotiated",
                                                  "algorithm": "Noise_IKpsk2", "grade": cp.OUTSIDE}]},
            "", Guidance.CRYPTO_PROFILE, Effect.INFO)


def grades(layer: Algorithms) -> list[cp.Grade]:
    """The graded algorithms of one layer."""
    items = layer.items
    if layer.layer in ("ike", "esp"):
        return cp.ipsec_sa(items, layer.layer)
    if layer.layer == "tls":
        out = []
        if items.get("version"):
            out.append(cp.tls_version(items["version"]))
        if items.get("cipher"):
            out.append(cp.tls_cipher(items["cipher"]))
        return out
    if layer.layer == "data-channel" and layer.state == "negotiated":
        return [cp.openvpn_data_cipher(items["cipher"], items.get("auth"))] if items.get("cipher") else []
    if layer.layer == "data-channel":
        return _openvpn_configured(items)
    return []


def _openvpn_configured(items: dict[str, str]) -> list[cp.Grade]:
    """What an OpenVPN configuration allows: only weak entries matter here (a
    negotiated choice is judged against the profile on its own)."""
    out = []
    allowed = items.get("data-ciphers", "").replace(" (default)", "")
    for cipher in filter(None, [*allowed.split(":"), items.get("data-ciphers-fallback", "")]):
        grade = cp.openvpn_data_cipher(cipher, items.get("auth"))
        if grade.grade == cp.WEAK:
            out.append(grade)
    if items.get("tls-version-min"):
        grade = cp.tls_version(items["tls-version-min"])
        if grade.grade == cp.WEAK:
            out.append(grade)
    for suite in filter(None, items.get("tls-cipher", "").split(":")):
        grade = cp.tls_cipher(suite)
        if grade.grade == cp.WEAK:
            out.append(grade)
    return out


def _row(layer: Algorithms, grade: cp.Grade) -> dict[str, str]:
    return {"layer": layer.layer, "state": layer.state, "kind": grade.kind, "algorithm": grade.algorithm,
            "grade": grade.grade, "why": grade.why, "read_from": layer.source}
