"""The rules deployment settings must follow, one function per kind of value.

Each check raises :class:`SettingsError` naming the key, the value (hidden when
secret) and what is allowed. Standard library only.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from provisioning.settings.auth import OIDC_ENV
from provisioning.settings.secret import Secret, SettingsError
from stacks import contract

CLOUDS = ("gcp", "aws", "local")
ENVIRONMENTS = contract.ENVIRONMENTS
ARTIFACT_MODES = ("proxied", "direct")
DB_TLS_MODES = ("verify-full", "require")
#: Artifact URI schemes each cloud may use; ``local`` stands in for either cloud.
ARTIFACT_SCHEMES = {"gcp": ("gs",), "aws": ("s3",), "local": ("s3", "gs")}
BACKEND_SCHEME = "postgresql+psycopg2"
#: Plain ``postgresql://`` selects psycopg 3 in SQLAlchemy 2, which the env does not ship.
REWRITTEN_SCHEMES = ("postgresql",)
MIN_ADMIN_PASSWORD = 12  # mlflow.server.auth refuses shorter admin passwords
MIN_FLASK_SECRET_KEY = 16
#: MLflow asks for "high-entropy passphrases (32+ characters)" (mlflow/utils/crypto.py).
MIN_KEK_PASSPHRASE = 32
MAX_SERVER_INSTANCES = 64
DATABASE_BACKUPS = ("auto", "pg_dump", "managed")
#: ``mlflow gc --older-than``: MLflow's own pattern (mlflow/cli/__init__.py, gc), one unit at least.
GC_AGE = re.compile(
    r"^((?P<days>[\.\d]+?)d)?((?P<hours>[\.\d]+?)h)?((?P<minutes>[\.\d]+?)m)?"
    r"((?P<seconds>[\.\d]+?)s)?$"
)
#: What an OnCalendar= expression is made of (systemd.time(7)); systemd checks the rest.
CALENDAR = re.compile(r"^[A-Za-z0-9*:/,.~ -]{1,100}$")
#: RDS DB instance identifiers and Cloud SQL instance names.
DB_INSTANCE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,97}$")
#: An AWS region (eu-west-1) or a GCP project ID (my-project, example.com:my-project).
DB_LOCATION = re.compile(r"^[a-z][a-z0-9.:-]{1,61}[a-z0-9]$")

DEFAULT_MLFLOW_VERSION = contract.DEFAULT_MLFLOW_VERSION
DEFAULT_PYTHON_VERSION = "3.11"
#: Let's Encrypt's production ACME directory (letsencrypt.org/docs/acme-protocol-updates).
DEFAULT_ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
MINIFORGE_RELEASE = "25.3.1-0"
DEFAULT_MINIFORGE_URL = (
    "https://github.com/conda-forge/miniforge/releases/download/"
    f"{MINIFORGE_RELEASE}/Miniforge3-{MINIFORGE_RELEASE}-Linux-x86_64.sh"
)
#: Published next to the installer as ``<installer>.sha256``.
DEFAULT_MINIFORGE_SHA256 = "376b160ed8130820db0ab0f3826ac1fc85923647f75c1b8231166e3d559ab768"
#: The Python in that installer's base environment, which offline installs build on
#: (Miniforge's installers ship Python 3.12 through the 25.x releases: conda-forge/miniforge
#: issue 803). Another installer's Python is read on the host before its wheels are fetched.
DEFAULT_MINIFORGE_PYTHON = "3.12"


def installer_python(miniforge_sha256: str) -> str | None:
    """The Python X.Y of the installer with this sha256, where the kit knows it."""
    return DEFAULT_MINIFORGE_PYTHON if miniforge_sha256 == DEFAULT_MINIFORGE_SHA256 else None


MINIFORGE_URL_SCHEMES = ("https", "http", "file")  # integrity comes from the sha256 pin

#: Environment names the kit's own env file sets; storage env must not shadow them.
RESERVED_ENV = frozenset(
    {
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "MLFLOW_DEFAULT_ARTIFACT_ROOT",
        "MLFLOW_SERVE_ARTIFACTS",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_CONFIG_PATH",
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
        "MLFLOW_KIT_CONFIG",
        "MLFLOW_CRYPTO_KEK_PASSPHRASE",
        "MLFLOW_CRYPTO_KEK_VERSION",
        "MLFLOW_DISABLE_TELEMETRY",
        "DO_NOT_TRACK",
        "REQUESTS_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
        # The server unit's (server_tmp_dir); an environment file would override it.
        "TMPDIR",
    }
)
#: ... and the mlflow-oidc-auth plugin's, which it writes with auth oidc.
RESERVED_ENV |= OIDC_ENV

PUBLIC_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PYTHON_VERSION = re.compile(r"^3\.\d{1,2}(\.\d{1,3})?$")
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
USERNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$")
#: Registered model names the kit serves: they appear in URLs, unit and file names as they are.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODEL_NAME_ALLOWED = "1-64 of letters, digits and _.- (starting with a letter or digit)"
MAX_MODEL_WORKERS = 16
MODEL_MEMORY_MB = (128, 65536)
#: Where the servers' temporary files go (TMPDIR): proxied downloads are fetched whole into
#: it before the first byte. Not under /tmp or /var/tmp, which PrivateTmp= replaces with the
#: unit's own copies (systemd.exec(5)); on the VM's disk, beside the mlflow user's home.
DEFAULT_SERVER_TMP_DIR = "/var/lib/mlflow/tmp"
#: Roots server_tmp_dir may sit under (a data disk's mount point, say): empty on Debian and
#: holding none of the kit's files, so bootstrap's chown and the servers' clean-up touch
#: nothing another program keeps (/var/lib and /var/cache hold other packages' files).
SERVER_TMP_ROOTS = ("/srv", "/mnt", "/data")
#: Memory and kernel filesystems, and the private copies PrivateTmp= mounts over the host's.
SERVER_TMP_REFUSED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp")
SERVER_TMP_PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,200}$")
SERVER_TMP_MIN_FREE_GIB = (1, 16384)


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(name, value, f"an integer from {low} to {high}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(name, value, "one of " + ", ".join(choices))


def check_server_tmp_dir(value: Any) -> None:
    """An absolute, normalised path on a disk the kit may give the mlflow user (0700)."""
    key = "server_tmp_dir"
    roots = ", ".join(SERVER_TMP_ROOTS)
    allowed = f"an absolute path at or under {DEFAULT_SERVER_TMP_DIR}, or under one of {roots}"
    if not isinstance(value, str) or not SERVER_TMP_PATH.fullmatch(value):
        raise SettingsError(key, value, f"{allowed}, of letters, digits and ._-/")
    path = PurePosixPath(value)
    if str(path) != value or ".." in path.parts:
        raise SettingsError(key, value, f"{allowed}, written without //, /./, .. or a final /")
    for refused in SERVER_TMP_REFUSED:
        if path.is_relative_to(refused):
            raise SettingsError(
                key,
                value,
                f"{allowed}; not under {', '.join(SERVER_TMP_REFUSED)} (memory and kernel "
                "filesystems, or the private copies PrivateTmp= gives each unit)",
            )
    if not path.is_relative_to(DEFAULT_SERVER_TMP_DIR) and not any(
        path.is_relative_to(root) and path != PurePosixPath(root) for root in SERVER_TMP_ROOTS
    ):
        raise SettingsError(key, value, allowed)


def check_host(name: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not DNS_NAME.fullmatch(value):
        raise SettingsError(name, value, "a DNS name or an IP address (no scheme, port or path)")


def url_host(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def check_printable(name: str, value: Secret) -> None:
    if any(ch in value.reveal() for ch in "\n\r\0"):
        raise SettingsError(name, value, "a single line without NUL characters")


def check_backend_store_uri(uri: str) -> tuple[str, str | None]:
    """Validate a SQLAlchemy Postgres URI; return it (scheme possibly rewritten) and a note.

    The password must be URL-encoded: raw ``@ / ? #`` in it would make urllib and
    SQLAlchemy split the URI differently, so they are rejected here.
    """
    key = "backend_store_uri"
    shape = f"{BACKEND_SCHEME}://user:<url-encoded password>@host[:port]/database[?options]"
    if not isinstance(uri, str):
        raise SettingsError(key, uri, shape, secret=True)
    note = None
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SettingsError(key, uri, f"a URI with scheme {BACKEND_SCHEME}://; {shape}", True)
    if scheme in REWRITTEN_SCHEMES:
        note = (
            f"{key}: scheme {scheme}:// rewritten to {BACKEND_SCHEME}:// "
            "(plain postgresql:// selects psycopg 3, which the server environment does not ship)"
        )
        uri = f"{BACKEND_SCHEME}://{rest}"
    elif scheme != BACKEND_SCHEME:
        raise SettingsError(
            key, uri, f"scheme {BACKEND_SCHEME}:// (or postgresql://); {shape}", secret=True
        )
    if any(ch.isspace() for ch in uri):
        raise SettingsError(key, uri, f"no whitespace (URL-encode it); {shape}", secret=True)
    parts = urlsplit(uri)
    netloc = parts.netloc
    if netloc.count("@") != 1:
        raise SettingsError(
            key,
            uri,
            f"exactly one '@' before the host (URL-encode @ / ? # in the password); {shape}",
            True,
        )
    if parts.fragment:
        raise SettingsError(key, uri, f"no '#' (URL-encode it as %23); {shape}", secret=True)
    userinfo, _, hostport = netloc.partition("@")
    user, has_password, password = userinfo.partition(":")
    if not user:
        raise SettingsError(key, uri, f"a user name; {shape}", secret=True)
    if has_password and not password:
        raise SettingsError(key, uri, f"a non-empty password when ':' is given; {shape}", True)
    for part in (user, password):
        if BAD_PERCENT.search(part):
            raise SettingsError(
                key, uri, f"valid %XX escapes in user and password (write % as %25); {shape}", True
            )
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise SettingsError(key, uri, f"a numeric port 1-65535; {shape}", secret=True) from None
    if not hostname or not hostport or hostport.startswith(":"):
        raise SettingsError(key, uri, f"a database host; {shape}", secret=True)
    if port is not None and not 1 <= port <= 65535:
        raise SettingsError(key, uri, f"a numeric port 1-65535; {shape}", secret=True)
    database = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not database or "/" in database:
        raise SettingsError(key, uri, f"a database name after the host; {shape}", secret=True)
    return uri, note


def check_artifacts_destination(cloud: str, value: str) -> None:
    schemes = ARTIFACT_SCHEMES[cloud]
    allowed = " or ".join(f"{s}://bucket[/prefix]" for s in schemes) + f" for cloud {cloud!r}"
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError("artifacts_destination", value, allowed)
    if not BUCKET.fullmatch(parts.netloc) or "//" in parts.path:
        raise SettingsError("artifacts_destination", value, allowed + " with a valid bucket name")


def check_pem_file(name: str, path: Any, marker: str, context: str = "") -> None:
    allowed = f"an existing readable PEM file containing {marker!r}" + (
        f" {context}" if context else ""
    )
    if not isinstance(path, str) or not path:
        raise SettingsError(name, path, allowed)
    try:
        text = Path(path).expanduser().read_text(errors="replace")
    except OSError:
        raise SettingsError(name, path, allowed) from None
    if marker not in text:
        raise SettingsError(name, path, allowed)


def check_env(name: str, env: Any, secret: bool) -> dict:
    if not isinstance(env, Mapping):
        raise SettingsError(
            name, env, "a mapping of environment variable names to strings", secret=secret
        )
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            raise SettingsError(f"{name}.{key}", value, "a name of letters, digits and _", secret)
        if key in RESERVED_ENV:
            raise SettingsError(
                f"{name}.{key}", value, "a name the kit does not set itself", secret=secret
            )
        if secret:
            if isinstance(value, str):
                value = Secret(value)
            if not isinstance(value, Secret):
                raise SettingsError(f"{name}.{key}", value, "a string", secret=True)
            text = value.reveal()
        else:
            if not isinstance(value, str):
                raise SettingsError(f"{name}.{key}", value, "a string")
            text = value
        if any(ch in text for ch in "\n\r\0"):
            raise SettingsError(f"{name}.{key}", value, "a single line without NUL", secret)
        out[key] = value
    return out


def check_tracking_url(url: str) -> str:
    allowed = "https://<host>[:port] with no path, query or credentials"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError("tracking_url", url, allowed) from None
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise SettingsError("tracking_url", url, allowed)
    if port is not None and not 1 <= port <= 65535:
        raise SettingsError("tracking_url", url, allowed)
    return url.rstrip("/")


def check_public_key(value: Any) -> bool:
    """An OpenSSH public key line whose blob names the same key type."""
    parts = value.split() if isinstance(value, str) else []
    if len(parts) < 2 or parts[0] not in PUBLIC_KEY_TYPES:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return False
    kind = parts[0].encode()
    return blob[:4] == len(kind).to_bytes(4, "big") and blob[4 : 4 + len(kind)] == kind
