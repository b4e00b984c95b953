"""PostgreSQL, an S3-compatible server (moto) and a GCS emulator for the guest.

PostgreSQL's server certificate comes from the local cloud's database CA
(``pki.py``), as RDS's and Cloud SQL's come from their server CAs: clients verify
it with ``sslmode=verify-full`` against that CA's certificate and the address.

Each listens only on the host's address on the guest's private link, on a
port free at start time, so two runs on one machine do not collide.

What Cloud SQL and RDS do that the local PostgreSQL does not:

- the server CA is the cloud's (RDS: the region's ``rds-ca-*`` bundle; Cloud SQL:
  a per-instance or shared CA), downloaded by the operator and rotated on the
  cloud's schedule; here one CA per local cloud, valid 30 days, never rotated;
- what the server certificate names is the cloud's choice: RDS's names the
  instance's endpoint (a DNS name, which ``verify-full`` then needs in the URI);
  Cloud SQL's depends on the instance's CA mode and may not name its private IP.
  Here the certificate names the address the URI uses, so ``verify-full`` passes;
- connection limits per tier (``max_connections`` from the instance's memory),
  parameter groups or flags, backups, snapshots and maintenance restarts.
"""

from __future__ import annotations

import glob
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.localcloud.pki import LocalCA
from tests.localcloud.procs import free_port, run, spawn, stop, wait_for

BUCKET = "mlflow-artifacts"
ARTIFACT_PREFIX = "mlflow"
DB_NAME = "mlflow"
DB_USER = "mlflow"


def _bin(name: str) -> str:
    """An executable of this virtualenv (moto_server)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    preferred = [p for p in found if "/15/" in p]
    chosen = (preferred or found or [None])[0]
    if chosen is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql-15)")
    return Path(chosen).parent


@dataclass
class Postgres:
    """A throwaway PostgreSQL 15 cluster: scram passwords, TLS only over TCP."""

    address: str
    client_cidr: str
    run_dir: Path
    tied: bool
    port: int = 0
    password: str = ""
    pid: int = 0

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "postgres" / "data"

    @property
    def socket_dir(self) -> Path:
        return self.run_dir / "postgres" / "socket"

    def uri(self, driver: str = "postgresql+psycopg2", database: str = DB_NAME) -> str:
        return (
            f"{driver}://{DB_USER}:{quote(self.password, safe='')}@{self.address}:{self.port}"
            f"/{database}?sslmode=require"
        )

    def create_database(self, name: str) -> str:
        """A new, empty database ``name`` owned by the kit's role (a second cloud database
        instance, as far as the kit can tell); its URI."""
        if not name.replace("_", "").isalnum() or name.lower() != name:
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        self.psql(f"CREATE DATABASE {name} OWNER {DB_USER};\n")
        return self.uri(database=name)

    def copy_database(self, name: str, source: str = DB_NAME) -> str:
        """A new database ``name`` owned by the kit's role with ``source``'s contents (dump
        and restore: the source may be in use); its URI."""
        self.create_database(name)
        common = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]
        dump = run([str(postgres_bindir() / "pg_dump"), *common, source], user="postgres")
        run(
            [str(postgres_bindir() / "psql"), *common, "-q", "-v", "ON_ERROR_STOP=1", "-d", name],
            input=dump.stdout,
            user="postgres",
        )
        return self.uri(database=name)

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n")

    def start(self) -> None:
        base = self.run_dir / "postgres"
        fresh = not self.data_dir.exists()
        if fresh:
            self.socket_dir.mkdir(parents=True)
            shutil.chown(base, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            base.chmod(0o700)
            run(
                [
                    str(postgres_bindir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                ],
                user="postgres",
            )
            self._tls_certificate()
            (self.data_dir / "pg_hba.conf").write_text(
                "# local administration over the private socket; the guest only over TLS\n"
                "local all postgres peer\n"
                f"hostssl all all {self.client_cidr} scram-sha-256\n"
            )
            self.port = self.port or free_port(self.address)
            self.password = "pg-" + secrets.token_urlsafe(18) + "@:/?#%"
        self._spawn()
        wait_for(self._accepting, what="PostgreSQL", timeout=60)
        if fresh:
            # Statements on stdin, so the password never shows in a process list.
            self.psql(
                f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{self.password}';\n"
                f"CREATE DATABASE {DB_NAME} OWNER {DB_USER};\n"
            )

    @property
    def ca(self) -> LocalCA:
        """The database CA: signs the server certificate; the kit verifies against its cert."""
        return LocalCA(self.run_dir / "database-ca", "mlflow-kit local cloud database CA")

    def _tls_certificate(self) -> None:
        """A server certificate from the database CA, for the address clients connect to
        (``verify-full`` checks it against the URI's host: an IP SAN)."""
        cert, key = self.data_dir / "server.crt", self.data_dir / "server.key"
        self.ca.ensure().issue_pair(cert, key, names=(self.address,))
        for path in (cert, key):
            shutil.chown(path, "postgres", "postgres")

    def _spawn(self) -> None:
        argv = [
            str(postgres_bindir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.address}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "ssl=on",
            "-c",
            "password_encryption=scram-sha-256",
            "-c",
            "max_connections=200",
        ]
        proc = spawn(
            argv,
            log=self.run_dir / "postgres.log",
            tied=self.tied,
            stop_signal=signal.SIGINT,
            user="postgres",
        )
        self.pid = proc.pid

    def _accepting(self) -> bool:
        result = subprocess.run(
            [
                str(postgres_bindir() / "pg_isready"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str) -> str:
        result = run(
            [
                str(postgres_bindir() / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-d",
                "postgres",
            ],
            input=sql,
            user="postgres",
        )
        return result.stdout

    def stop(self) -> None:
        if self.pid:
            # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, data is safe.
            stop(self.pid, signal.SIGINT, timeout=30)
            self.pid = 0

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class _Served:
    """A stand-in server on the local cloud's address: a free port, stopped by PID."""

    address: str
    run_dir: Path
    tied: bool
    port: int = 0
    pid: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def stop(self) -> None:
        if self.pid:
            stop(self.pid)
            self.pid = 0


@dataclass
class S3Server(_Served):
    """moto in server mode: an S3-compatible endpoint with the artifact bucket."""

    access_key: str = "AKIALOCALCLOUDTEST01"
    secret_key: str = ""

    def start(self) -> None:
        self.port = self.port or free_port(self.address)
        self.secret_key = self.secret_key or secrets.token_urlsafe(30)
        proc = spawn(
            [_bin("moto_server"), "-H", self.address, "-p", str(self.port)],
            log=self.run_dir / "moto.log",
            tied=self.tied,
        )
        self.pid = proc.pid
        client = self.client()
        wait_for(lambda: client.list_buckets() is not None, what="moto S3 server", timeout=60)
        client.create_bucket(Bucket=BUCKET)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@dataclass
class GcsEmulator(_Served):
    """gcp-storage-emulator with the artifact bucket, storing on disk; resumable uploads
    appended in place (``gcs_emulator.py``: the emulator itself rewrites the whole upload
    for each chunk)."""

    def start(self) -> None:
        self.port = self.port or free_port(self.address)
        workdir = self.run_dir / "gcs"
        workdir.mkdir(parents=True, exist_ok=True)
        proc = spawn(
            [
                sys.executable,
                str(Path(__file__).with_name("gcs_emulator.py")),
                "start",
                "--host",
                self.address,
                "--port",
                str(self.port),
                "--default-bucket",
                BUCKET,
                "--quiet",
            ],
            log=self.run_dir / "gcs.log",
            tied=self.tied,
            cwd=workdir,
        )
        self.pid = proc.pid
        wait_for(lambda: self.client().bucket(BUCKET).exists(), what="GCS emulator", timeout=60)

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="local",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )


@dataclass
class FileServer(_Served):
    """Plain HTTP serving one directory (the Miniforge installer stand-in) to the guest."""

    @property
    def directory(self) -> Path:
        return self.run_dir / "files"

    def url(self, name: str) -> str:
        return f"http://{self.address}:{self.port}/{name}"

    def start(self) -> None:
        import urllib.request

        self.port = self.port or free_port(self.address)
        self.directory.mkdir(parents=True, exist_ok=True)
        proc = spawn(
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                self.address,
                "--directory",
                str(self.directory),
                str(self.port),
            ],
            log=self.run_dir / "files.log",
            tied=self.tied,
        )
        self.pid = proc.pid
        wait_for(
            lambda: urllib.request.urlopen(self.url(""), timeout=2).status == 200,  # noqa: S310
            what="file server",
            timeout=30,
        )


@dataclass
class VendorFiles(_Served):
    """HTTPS on port 443 serving the clouds' download servers' stand-ins (see ``vendor.py``)."""

    port: int = 443

    @property
    def root(self) -> Path:
        return self.run_dir / "vendor" / "sites"

    @property
    def certs(self) -> Path:
        return self.run_dir / "vendor" / "certs"

    def start(self) -> None:
        import socket

        self.root.mkdir(parents=True, exist_ok=True)
        proc = spawn(
            [
                sys.executable,
                "-m",
                "tests.localcloud.https_files",
                "--bind",
                self.address,
                "--port",
                str(self.port),
                "--root",
                str(self.root),
                "--certs",
                str(self.certs),
                "--default-name",
                self.address,
            ],
            log=self.run_dir / "vendor.log",
            tied=self.tied,
            cwd=Path(__file__).resolve().parents[2],
        )
        self.pid = proc.pid

        def listening() -> bool:
            with socket.create_connection((self.address, self.port), timeout=2):
                return True

        wait_for(listening, what="vendor download stand-in (HTTPS)", timeout=30)
