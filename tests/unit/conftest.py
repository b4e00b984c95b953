"""Shared fixtures for the unit tier: valid settings and real PEM files."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.localcloud.procs import stop
from tests.localcloud.services import Postgres

#: Every character a URI must escape, and some a shell or an ini parser would eat.
NASTY_PASSWORD = "p@ss:w/rd?x#y%z&a=b+c d$HOME\\`'\""
#: NASTY_PASSWORD URL-encoded, as the stacks write it into backend_store_uri.
NASTY_PASSWORD_ENCODED = "p%40ss%3Aw%2Frd%3Fx%23y%25z%26a%3Db%2Bc%20d%24HOME%5C%60%27%22"
NASTY_URI = f"postgresql+psycopg2://mlflow:{NASTY_PASSWORD_ENCODED}@10.20.0.3:5432/mlflow"
#: Admin password with characters an env file, a shell and configparser all treat specially.
ADMIN_PASSWORD = "Adm1n \"pass\" 100% $HOME \\ # `x` 'q'"


def valid_settings(**changes) -> dict:
    """Keyword arguments for a valid Deployment on AWS, with ``changes`` applied."""
    settings = {
        "host": "203.0.113.10",
        "ssh_user": "debian",
        "cloud": "aws",
        "environment": "dev",
        "backend_store_uri": NASTY_URI,
        "artifacts_destination": "s3://mlflow-artifacts-123/dev",
        "admin_password": ADMIN_PASSWORD,
    }
    settings.update(changes)
    return settings


@pytest.fixture(scope="session")
def pem_dir(tmp_path_factory) -> Path:
    """A self-signed CA certificate and a server certificate with its key, made by openssl."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("pem")
    for name, subject in (("ca", "/CN=Test CA"), ("server", "/CN=mlflow.example.com")):
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", subject, "-keyout", str(out / f"{name}.key"),
                "-out", str(out / f"{name}.crt"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return out


@pytest.fixture
def postgres():
    """A PostgreSQL 15 of its own on loopback (the kit's role and database), for a service
    test's MLflow server."""
    # PostgreSQL runs as its own user, who must reach its directory: not under pytest's
    # private tmp.
    run_dir = Path(tempfile.mkdtemp(prefix="kit-postgres-", dir="/var/tmp"))
    run_dir.chmod(0o755)
    database = Postgres("127.0.0.1", "127.0.0.1/32", run_dir, tied=True)
    try:
        database.start()
        yield database
    finally:
        if database.pid:
            stop(database.pid, signal.SIGINT)
        shutil.rmtree(run_dir, ignore_errors=True)
