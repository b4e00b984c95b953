"""Let's Encrypt's test server in the local cloud: Pebble, with pebble-challtestsrv as its DNS.

Both come from Debian's ``pebble`` package and listen only on the services'
address. ``pebble-challtestsrv`` answers DNS for names a test points at a host
(``ChallTestSrv.point``; every other name gets an empty answer), and nothing else
(its own challenge servers are off). ``pebble -dnsserver`` resolves through it and
validates HTTP-01 on port 80 (``httpPort``) and TLS-ALPN-01 on port 443
(``tlsPort``) of the address it finds, as Let's Encrypt does; its ACME API and
management port serve a certificate from the local cloud's ACME listener CA
(``pki.py``; the package ships none), which clients get as ``REQUESTS_CA_BUNDLE``.
Its issuing root is generated on every start and read from the management port
(``Pebble.roots``). ``PEBBLE_VA_NOSLEEP=1``: validation starts at once.

What Let's Encrypt does that this does not:

- rate limits (certificates per registered domain and per exact set of names a
  week, failed validations an hour, new orders, accounts per address): a test may
  issue as often as it likes;
- the domain policy: Let's Encrypt issues only for names under a public suffix
  and not on its block lists; Pebble accepts made-up names (``*.test`` here);
- real DNS: public resolution with DNSSEC, and CAA records (a CAA record that
  names another CA makes Let's Encrypt refuse); challtestsrv answers only what a
  test set, and Pebble as packaged here issues whatever CAA says (measured with a
  CAA ``issue`` record naming another CA);
- validation from the internet, from several vantage points that must agree; here
  one validation from this machine, with no firewall or security group between it
  and the host, so a host whose port 80 the cloud does not open passes here;
- trust: Let's Encrypt's API and its roots are trusted by Debian's CA bundle, so
  clients need no extra file; Pebble's listener CA and its issuing root must be
  given to every client (``acme_ca_cert_file``, ``Pebble.roots``), and the root
  changes each time Pebble starts, which also forgets every account and order;
- revocation information: Pebble's certificates name no OCSP responder or CRL;
- nonces: Pebble rejects 5% of valid nonces by default to test clients' retries;
  here none (``nonce_reject=0``) because certbot retries a rejected nonce only
  once and a suite of many issuances would fail now and then; Let's Encrypt
  rejects only stale nonces;
- authorization reuse: Pebble reuses a valid authorization half the time, at random.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.localcloud.pki import LocalCA
from tests.localcloud.procs import free_port, spawn, wait_for
from tests.localcloud.services import _Served

#: Where Pebble validates, as Let's Encrypt does (RFC 8555 8.3 and RFC 8737).
HTTP01_PORT = 80
TLSALPN01_PORT = 443


def free_udp_and_tcp_port(address: str) -> int:
    """A port free on ``address`` for both TCP and UDP right now (DNS answers on both)."""
    for _ in range(50):
        port = free_port(address)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free for both TCP and UDP on {address}")


@dataclass
class ChallTestSrv(_Served):
    """pebble-challtestsrv as the DNS Pebble asks: an A record per pointed name, no defaults.

    ``port`` is its management API (plain HTTP, no authentication: services
    address only), ``dns_port`` its DNS server (UDP and TCP).
    """

    dns_port: int = 0

    @property
    def dns_server(self) -> str:
        return f"{self.address}:{self.dns_port}"

    def start(self) -> None:
        if shutil.which("pebble-challtestsrv") is None or shutil.which("pebble") is None:
            raise RuntimeError(
                "pebble is not installed (bash tests/localcloud/install-system-packages.sh)"
            )
        self.port = self.port or free_port(self.address)
        self.dns_port = self.dns_port or free_udp_and_tcp_port(self.address)
        proc = spawn(
            [
                "pebble-challtestsrv",
                # No answer for names nobody pointed (the default would be 127.0.0.1 / ::1).
                "-defaultIPv4", "",
                "-defaultIPv6", "",
                "-dns01", self.dns_server,
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"{self.address}:{self.port}",
            ],
            log=self.run_dir / "challtestsrv.log",
            tied=self.tied,
        )  # fmt: skip
        self.pid = proc.pid
        wait_for(self._answers, what="pebble-challtestsrv", timeout=30)

    def _answers(self) -> bool:
        with socket.create_connection((self.address, self.port), timeout=2):
            pass
        with socket.create_connection((self.address, self.dns_port), timeout=2):
            return True

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own http:// endpoint
            f"{self.endpoint}/{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 200:
                raise RuntimeError(f"pebble-challtestsrv /{path} answered {response.status}")

    def point(self, domain: str, address: str) -> None:
        """``domain`` resolves (A) to ``address`` only, and has no AAAA record."""
        self._post("clear-a", {"host": domain})
        self._post("clear-aaaa", {"host": domain})
        self._post("add-a", {"host": domain, "addresses": [address]})

    def forget(self, domain: str) -> None:
        """``domain`` resolves to nothing again."""
        self._post("clear-a", {"host": domain})
        self._post("clear-aaaa", {"host": domain})

    def add_caa(self, domain: str, issuer: str) -> None:
        """A CAA ``issue`` record for ``domain`` naming ``issuer``."""
        self._post("add-caa", {"host": domain, "policies": [{"tag": "issue", "value": issuer}]})


@dataclass
class Pebble(_Served):
    """Pebble's ACME API on ``port`` and its management API on ``management_port``."""

    management_port: int = 0
    dns_server: str = ""
    nonce_reject: int = 0

    @property
    def directory(self) -> Path:
        return self.run_dir / "pebble"

    @property
    def listener_ca(self) -> LocalCA:
        return LocalCA(self.run_dir / "acme-listener-ca", "mlflow-kit local cloud ACME listener CA")

    @property
    def directory_url(self) -> str:
        return f"https://{self.address}:{self.port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://{self.address}:{self.management_port}"

    def start(self) -> None:
        self.port = self.port or free_port(self.address)
        self.management_port = self.management_port or free_port(self.address)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        cert, key = self.directory / "listener.crt", self.directory / "listener.key"
        if not cert.exists():
            self.listener_ca.ensure().issue_pair(cert, key, names=(self.address,))
        config = self.directory / "pebble-config.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{self.address}:{self.port}",
                        "managementListenAddress": f"{self.address}:{self.management_port}",
                        "certificate": str(cert),
                        "privateKey": str(key),
                        "httpPort": HTTP01_PORT,
                        "tlsPort": TLSALPN01_PORT,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                },
                indent=2,
            )
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject),
        }
        proc = spawn(
            ["pebble", "-config", str(config), "-dnsserver", self.dns_server],
            log=self.run_dir / "pebble.log",
            tied=self.tied,
            cwd=self.directory,
            env=env,
        )
        self.pid = proc.pid
        wait_for(lambda: self._get(self.directory_url), what="Pebble's ACME API", timeout=30)
        wait_for(self.roots, what="Pebble's management API", timeout=30)

    def _get(self, url: str) -> str:
        context = ssl.create_default_context(cafile=str(self.listener_ca.cert))
        with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310
            return response.read().decode()

    def roots(self) -> str:
        """Pebble's issuing root certificate(s), PEM, from its management port.

        New on every start of Pebble. Certificates Pebble issues chain to it through
        the intermediate that comes with them (``fullchain.pem``)."""
        pem = self._get(f"{self.management_url}/roots/0")
        if "BEGIN CERTIFICATE" not in pem:
            raise RuntimeError(f"Pebble's management port gave no certificate: {pem[:200]!r}")
        return pem
