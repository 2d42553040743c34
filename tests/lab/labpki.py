"""A throw-away certificate authority for the lab's VPN servers and clients.

ocserv (TLS) and strongSwan (IKEv2 certificate authentication) need a CA,
a server certificate whose subjectAltName is the server's lab address, and
(strongSwan) a client certificate. Made with the `openssl` command line at
set-up, ECDSA P-256 (fast to make, accepted by GnuTLS and strongSwan), valid
for a day, in a directory of the lab's work dir that goes with it.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path


class PkiError(RuntimeError):
    """openssl refused; the message carries its stderr."""


@dataclass(frozen=True)
class Issued:
    """One key pair and its certificate (PEM files)."""

    name: str
    key: Path
    cert: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")


class LabCA:
    """`LabCA(directory)` makes the CA at once; `issue()` signs end-entity certificates."""

    def __init__(self, directory: Path, name: str = "leakcheck lab CA"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "ca.key"
        self.cert = directory / "ca.pem"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(self.key), "-out", str(self.cert), "-days", "1", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)

    def issue(self, name: str, common_name: str, *, san: str | None = None, server: bool = True) -> Issued:
        """A P-256 key and a certificate for `common_name`; `san` is an IP address or a
        DNS name (default: the common name). Server certificates carry serverAuth, client
        ones clientAuth (strongSwan checks neither by default; GnuTLS does for TLS)."""
        key = self.directory / f"{name}.key"
        csr = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.pem"
        ext = self.directory / f"{name}.ext"
        alt = san or common_name
        try:
            ipaddress.ip_address(alt)
            alt_entry = f"IP:{alt}"
        except ValueError:
            alt_entry = f"DNS:{alt}"
        usage = "serverAuth" if server else "clientAuth"
        ext.write_text(f"subjectAltName={alt_entry}\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}", cwd=self.directory)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert), cwd=self.directory)
        key.chmod(0o600)
        return Issued(name=name, key=key, cert=cert)
