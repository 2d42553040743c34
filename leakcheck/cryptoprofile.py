"""NCSC's cryptographic profiles, and where a negotiated algorithm stands.

Sources (looked up 2026-12-02):

- NCSC, "Using IPsec to protect data",
  https://www.ncsc.gov.uk/guidance/using-ipsec-protect-data . It defines
  two profiles: **PRIME** (IKEv2; renamed "Recommended Profile" in the
  2022 revision, whose particulars it says were last updated in 2022 and
  are unchanged since) and **Foundation** (IKEv1 for devices that cannot
  do PRIME yet; the 2022 revision's "Legacy Profile"). The particulars,
  as summarised from that page by UKCloud ("IPsec VPN Foundation and PRIME
  profiles", reviewed 2019-03-21) and by the NCSC's own end-user-device
  guidance:
  - PRIME: IKEv2; IKE encryption AES-128 in GCM with a 128-bit ICV
    (optionally AES-CBC); PRF HMAC-SHA256; Diffie-Hellman group 19
    (256-bit random ECP, RFC 5903); authentication ECDSA-256 with SHA-256
    on P-256; ESP AES-128 in GCM with a 128-bit ICV.
  - Foundation: IKEv1; encryption AES-128 CBC (RFC 3602); PRF
    HMAC-SHA-256 (RFC 4868); Diffie-Hellman group 14 (2048-bit MODP,
    RFC 3526); X.509 RSA-2048 with SHA-256; ESP AES-128 CBC with
    HMAC-SHA-256 integrity.
  Stronger members of the same families (AES-256, SHA-384/512, ECP-384/521,
  larger MODP groups) are accepted as meeting a profile: they are what the
  profile names, with longer keys.
- NCSC, "Using TLS to protect data",
  https://www.ncsc.gov.uk/guidance/using-tls-to-protect-data (formerly
  tls-external-facing-services): TLS 1.3 preferred, TLS 1.2 acceptable with
  ECDHE key exchange and AEAD (AES-GCM) suites; SSL and TLS 1.0/1.1
  deprecated. Applied here to OpenVPN's control channel, and its AEAD
  advice to the data channel.

Every algorithm gets one grade:
- `prime`: named by PRIME (or the TLS profile's recommended choices);
- `foundation`: named by Foundation only;
- `outside`: not weak, but in neither profile (ChaCha20-Poly1305,
  Curve25519, Brainpool, AES-CCM, short GCM ICVs...);
- `weak`: legacy or broken, named in every finding: DES/3DES, Blowfish,
  CAST, RC2/RC4, NULL, MD5, SHA-1 (as PRF, MAC or CBC HMAC), MODP groups
  below 2048 bits and the RFC 5114 groups, TLS below 1.2, CBC suites with
  SHA-1 MACs (MAC-then-encrypt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRIME, FOUNDATION, OUTSIDE, WEAK = "prime", "foundation", "outside", "weak"
PROFILES = {
    "ncsc-prime": (PRIME,),
    "ncsc-foundation": (PRIME, FOUNDATION),
}
PROFILE_NAMES = {
    "ncsc-prime": "NCSC PRIME (Recommended Profile), 'Using IPsec to protect data' (2022 revision)",
    "ncsc-foundation": "NCSC Foundation (Legacy Profile), 'Using IPsec to protect data' (2022 revision)",
}
IPSEC_URL = "https://www.ncsc.gov.uk/guidance/using-ipsec-protect-data"
TLS_URL = "https://www.ncsc.gov.uk/guidance/using-tls-to-protect-data"


@dataclass(frozen=True)
class Grade:
    algorithm: str  # as the client named it
    kind: str  # encryption | integrity | prf | dh-group | ike-version | data-cipher | tls-version | tls-cipher
    grade: str  # prime | foundation | outside | weak
    why: str

    def meets(self, profile: str) -> bool:
        return self.grade in PROFILES[profile]


def _g(algorithm: str, kind: str, grade: str, why: str) -> Grade:
    return Grade(algorithm, kind, grade, why)


# ---------------------------------------------------------------- IPsec (strongSwan's vici names)

def ipsec_encryption(name: str, keysize: str | None, layer: str) -> Grade:
    """An IKE or ESP encryption algorithm as vici reports it (AES_GCM_16, 3DES_CBC...)."""
    upper = name.upper()
    bits = int(keysize) if keysize and keysize.isdigit() else None
    label = f"{name}" + (f"-{bits}" if bits else "")
    if any(token in upper for token in ("3DES", "DES", "BLOWFISH", "CAST", "NULL", "IDEA", "RC5")):
        return _g(label, "encryption", WEAK, "a legacy cipher (64-bit block or no encryption)")
    if upper.startswith("AES") and bits is not None and bits < 128:
        return _g(label, "encryption", WEAK, "key shorter than 128 bits")
    if upper == "AES_GCM_16":
        return _g(label, "encryption", PRIME, "AES-GCM with a 128-bit ICV (PRIME)")
    if upper == "AES_CBC":
        if layer == "ike":
            return _g(label, "encryption", PRIME, "AES-CBC: PRIME allows it for IKE (optionally), Foundation requires it")
        return _g(label, "encryption", FOUNDATION, "AES-CBC: Foundation's ESP cipher; PRIME's ESP is AES-GCM")
    return _g(label, "encryption", OUTSIDE, "not named by NCSC's IPsec profiles")


def ipsec_integrity(name: str) -> Grade:
    upper = name.upper()
    if "MD5" in upper or "SHA1" in upper:
        return _g(name, "integrity", WEAK, "MD5/SHA-1 integrity")
    if upper.startswith("HMAC_SHA2_"):
        return _g(name, "integrity", PRIME, "HMAC-SHA2")
    return _g(name, "integrity", OUTSIDE, "not named by NCSC's IPsec profiles")


def ipsec_prf(name: str) -> Grade:
    upper = name.upper()
    if "MD5" in upper or "SHA1" in upper:
        return _g(name, "prf", WEAK, "an MD5/SHA-1 PRF")
    if upper.startswith("PRF_HMAC_SHA2_"):
        return _g(name, "prf", PRIME, "HMAC-SHA2 PRF")
    return _g(name, "prf", OUTSIDE, "not named by NCSC's IPsec profiles")


MODP = re.compile(r"^MODP_(\d+)(?:_(\d+))?$")


def ipsec_dh(name: str) -> Grade:
    upper = name.upper()
    if upper in ("ECP_256", "ECP_384", "ECP_521"):
        return _g(name, "dh-group", PRIME, "a random ECP group (RFC 5903), PRIME's family")
    match = MODP.match(upper)
    if match:
        if match.group(2) or int(match.group(1)) < 2048:
            return _g(name, "dh-group", WEAK, "MODP below 2048 bits or an RFC 5114 group")
        return _g(name, "dh-group", FOUNDATION, "a MODP group of 2048 bits or more (Foundation)")
    if upper in ("ECP_192", "ECP_224"):
        return _g(name, "dh-group", WEAK, "an elliptic curve below 256 bits")
    return _g(name, "dh-group", OUTSIDE, "not named by NCSC's IPsec profiles")


def ike_version(version: str) -> Grade:
    if version == "2":
        return _g("IKEv2", "ike-version", PRIME, "IKEv2 (PRIME)")
    return _g(f"IKEv{version}", "ike-version", FOUNDATION, "IKEv1: Foundation only")


def ipsec_sa(sa: dict[str, str], layer: str) -> list[Grade]:
    """Grades of one negotiated IKE SA or CHILD SA (vici list-sas fields)."""
    out = []
    if layer == "ike" and sa.get("version"):
        out.append(ike_version(sa["version"]))
    if sa.get("encr-alg"):
        out.append(ipsec_encryption(sa["encr-alg"], sa.get("encr-keysize"), layer))
    if sa.get("integ-alg"):
        out.append(ipsec_integrity(sa["integ-alg"]))
    if sa.get("prf-alg"):
        out.append(ipsec_prf(sa["prf-alg"]))
    if sa.get("dh-group"):
        out.append(ipsec_dh(sa["dh-group"]))
    return out


# ---------------------------------------------------------------- OpenVPN and TLS

OPENVPN_WEAK = ("BF-", "DES", "CAST", "RC2", "RC4", "SEED", "IDEA", "DESX")


def openvpn_data_cipher(cipher: str, auth: str | None = None) -> Grade:
    """An OpenVPN data-channel cipher (`data-ciphers`, `cipher`, the negotiated one),
    with its `auth` digest for non-AEAD ciphers (OpenVPN's default is SHA1)."""
    upper = cipher.upper()
    if upper == "NONE" or any(upper.startswith(t) or t in upper for t in OPENVPN_WEAK):
        return _g(cipher, "data-cipher", WEAK, "a legacy cipher (64-bit block, e.g. SWEET32) or none")
    if re.fullmatch(r"AES-(128|192|256)-GCM", upper):
        return _g(cipher, "data-cipher", PRIME, "AES-GCM (AEAD), as PRIME's ESP")
    if re.fullmatch(r"AES-(128|192|256)-CBC", upper):
        digest = (auth or "SHA1").upper().replace("-", "")
        if digest in ("SHA1", "MD5", "NONE"):
            return _g(f"{cipher} (auth {auth or 'SHA1, the default'})", "data-cipher", WEAK,
                      "CBC with an HMAC-SHA1/MD5 digest: no AEAD and a legacy MAC")
        return _g(f"{cipher} (auth {auth})", "data-cipher", FOUNDATION, "AES-CBC with HMAC-SHA2 (Foundation)")
    return _g(cipher, "data-cipher", OUTSIDE, "not named by NCSC's profiles")


def tls_version(version: str) -> Grade:
    """A TLS version: "1.3", "TLSv1.2", "1.0"..."""
    number = version.upper().replace("TLSV", "").replace("TLS", "").strip() or version
    if number in ("1.3",):
        return _g(f"TLS {number}", "tls-version", PRIME, "TLS 1.3 (NCSC's preferred version)")
    if number == "1.2":
        return _g(f"TLS {number}", "tls-version", PRIME, "TLS 1.2 (acceptable with ECDHE and AEAD suites)")
    return _g(f"TLS {number}", "tls-version", WEAK, "TLS below 1.2 (deprecated)")


def tls_cipher(suite: str) -> Grade:
    """A TLS cipher suite, OpenSSL or IANA style (TLS_AES_256_GCM_SHA384, ECDHE-ECDSA-AES256-GCM-SHA384)."""
    upper = suite.upper().replace("_", "-")
    if any(t in upper for t in ("RC4", "DES", "MD5", "NULL", "EXPORT", "ANON", "ADH", "AECDH")):
        return _g(suite, "tls-cipher", WEAK, "a broken or legacy TLS suite")
    if "CBC" in upper and upper.endswith("-SHA") or re.search(r"-CBC-SHA$|AES(128|256)-SHA$", upper):
        return _g(suite, "tls-cipher", WEAK, "a CBC suite with an HMAC-SHA1 MAC (MAC-then-encrypt)")
    if "GCM" in upper and (upper.startswith("TLS-AES") or "ECDHE" in upper):
        return _g(suite, "tls-cipher", PRIME, "ECDHE/TLS 1.3 with AES-GCM")
    return _g(suite, "tls-cipher", OUTSIDE, "not among NCSC's recommended TLS suites")


__all__ = ["Grade", "PROFILES", "PROFILE_NAMES", "ipsec_sa", "ipsec_encryption", "ipsec_integrity", "ipsec_prf",
           "ipsec_dh", "openvpn_data_cipher", "tls_version", "tls_cipher", "PRIME", "FOUNDATION", "OUTSIDE", "WEAK"]
