"""The local cloud's own certificate authorities, made with the ``openssl`` command.

Each CA serves one purpose and lives in its own directory under the run dir
(0700, its key 0600, owned by root), so a guest trusts exactly what a test gives
it and never a key: guests cannot see the machine's files, and nothing here is
ever copied into a guest but a CA's certificate.

- ``vendor/ca``: the clouds' download servers' stand-ins (``vendor.py``); this one
  is installed into a cloud-like guest's trust store when its user data downloads
  something;
- ``database-ca``: the local PostgreSQL's server certificate, given to the kit as
  ``db_ca_cert_file`` (as RDS and Cloud SQL give their server CA);
- ``acme-listener-ca``: Pebble's HTTPS listener (the ACME API and its management
  port), given to certbot as ``REQUESTS_CA_BUNDLE`` (``acme_ca_cert_file``).
  Pebble's *issuing* root is Pebble's own, new on every start (``acme.py``).
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.localcloud.procs import run

VALIDITY_DAYS = "30"


@dataclass
class LocalCA:
    """A certificate authority of the local cloud's own: ``ca.crt`` and ``ca.key``."""

    directory: Path
    common_name: str = "mlflow-kit local cloud CA"

    @property
    def cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    def ensure(self) -> LocalCA:
        if self.cert.exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-days", VALIDITY_DAYS, "-subj", f"/CN={self.common_name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", str(self.key), "-out", str(self.cert),
            ]
        )  # fmt: skip
        self.key.chmod(0o600)
        return self

    def issue_pair(self, cert: Path, key: Path, *, names: tuple[str, ...]) -> Path:
        """A server certificate for ``names`` (DNS names or IP addresses) at ``cert``, its
        key at ``key`` (0600). The first name is the subject's common name."""
        self.ensure()
        sans = ",".join(f"IP:{name}" if _is_ip(name) else f"DNS:{name}" for name in names)
        with tempfile.TemporaryDirectory(prefix="localcloud-cert-") as tmp:
            csr, extensions = Path(tmp) / "r.csr", Path(tmp) / "ext.cnf"
            run(
                [
                    "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
                    "-keyout", str(key), "-out", str(csr),
                ]
            )  # fmt: skip
            key.chmod(0o600)
            extensions.write_text(
                f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n"
            )
            run(
                [
                    "openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.cert),
                    "-CAkey", str(self.key), "-CAcreateserial", "-days", VALIDITY_DAYS,
                    "-extfile", str(extensions), "-out", str(cert),
                ]
            )  # fmt: skip
        return cert

    def issue(self, name: str, certs_dir: Path) -> Path:
        """``certs_dir/<name>.pem``: a server certificate for ``name`` and its key, in one file."""
        pem = certs_dir / f"{name}.pem"
        if pem.exists():
            return pem
        certs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="localcloud-cert-") as tmp:
            crt, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            self.issue_pair(crt, key, names=(name,))
            pem.write_text(crt.read_text() + key.read_text())
        pem.chmod(0o600)
        return pem

    def copy_cert(self, destination: Path) -> Path:
        """The CA's certificate (never its key) at ``destination``, readable by anyone."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.cert, destination)
        destination.chmod(0o644)
        return destination


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
