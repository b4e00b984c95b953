"""The local cloud's CAs: what they issue verifies for the names asked, and keys stay private."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.localcloud.pki import LocalCA

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def verify(ca: LocalCA, cert, *args: str) -> int:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.cert), "-purpose", "sslserver", *args, str(cert)],
        capture_output=True,
        check=False,
    ).returncode


def test_a_leaf_for_an_address_and_a_name_verifies_for_those_only(tmp_path):
    ca = LocalCA(tmp_path / "ca", "test CA").ensure()
    cert, key = tmp_path / "leaf.crt", tmp_path / "leaf.key"
    ca.issue_pair(cert, key, names=("10.213.7.1", "db.local.test"))

    assert verify(ca, cert, "-verify_ip", "10.213.7.1") == 0
    assert verify(ca, cert, "-verify_hostname", "db.local.test") == 0
    assert verify(ca, cert, "-verify_ip", "10.213.7.2") != 0
    assert verify(ca, cert, "-verify_hostname", "other.local.test") != 0
    other = LocalCA(tmp_path / "other", "another CA").ensure()
    assert verify(other, cert, "-verify_ip", "10.213.7.1") != 0


def test_keys_are_private_and_the_ca_is_made_once(tmp_path):
    ca = LocalCA(tmp_path / "ca").ensure()
    first = ca.cert.read_text()
    ca.issue_pair(tmp_path / "c", tmp_path / "k", names=("127.0.0.1",))
    assert oct(ca.key.stat().st_mode & 0o777) == "0o600"
    assert oct(ca.directory.stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" not in ca.cert.read_text()
    assert LocalCA(tmp_path / "ca").ensure().cert.read_text() == first


def test_a_combined_pem_for_the_vendor_server_holds_certificate_and_key(tmp_path):
    ca = LocalCA(tmp_path / "ca")
    pem = ca.issue("s3.eu-central-1.amazonaws.com", tmp_path / "certs")
    text = pem.read_text()
    assert "BEGIN CERTIFICATE" in text and "PRIVATE KEY" in text
    assert oct(pem.stat().st_mode & 0o777) == "0o600"
    assert verify(ca, pem, "-verify_hostname", "s3.eu-central-1.amazonaws.com") == 0
