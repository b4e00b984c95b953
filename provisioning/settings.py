"""Deployment settings: everything ``fab bootstrap`` needs to know about one server.

Two sources produce a :class:`Deployment`: the outputs of a Pulumi stack
(:func:`deployment_from_outputs`) and a YAML settings file for hosts Pulumi did
not create (:func:`deployment_from_file`). Both end in the same validation, in
``Deployment.__post_init__``, so a bad value fails before any SSH connection with
a :class:`SettingsError` naming the key, the value (secrets redacted) and what is
allowed.

This module runs on the user's machine, so it imports only the standard library
and PyYAML (no SQLAlchemy, no MLflow).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from stacks import contract

log = logging.getLogger(__name__)

REDACTED = "*****"

CLOUDS = ("gcp", "aws", "local")
ENVIRONMENTS = contract.ENVIRONMENTS
ARTIFACT_MODES = ("proxied", "direct")
TLS_MODES = ("self-signed", "provided", "letsencrypt")
#: Artifact URI schemes each cloud may use; ``local`` stands in for either cloud.
ARTIFACT_SCHEMES = {"gcp": ("gs",), "aws": ("s3",), "local": ("s3", "gs")}
BACKEND_SCHEME = "postgresql+psycopg2"
#: Plain ``postgresql://`` selects psycopg 3 in SQLAlchemy 2, which the env does not ship.
REWRITTEN_SCHEMES = ("postgresql",)
MIN_ADMIN_PASSWORD = 12  # mlflow.server.auth refuses shorter admin passwords
MIN_FLASK_SECRET_KEY = 16
MAX_SERVER_INSTANCES = 64

DEFAULT_MLFLOW_VERSION = contract.DEFAULT_MLFLOW_VERSION
DEFAULT_PYTHON_VERSION = "3.11"
MINIFORGE_RELEASE = "25.3.1-0"
DEFAULT_MINIFORGE_URL = (
    "https://github.com/conda-forge/miniforge/releases/download/"
    f"{MINIFORGE_RELEASE}/Miniforge3-{MINIFORGE_RELEASE}-Linux-x86_64.sh"
)
#: Published next to the installer as ``<installer>.sha256``.
DEFAULT_MINIFORGE_SHA256 = "376b160ed8130820db0ab0f3826ac1fc85923647f75c1b8231166e3d559ab768"
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
        "REQUESTS_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
    }
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}(\.\d{1,3})?$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_USERNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$")


class Secret:
    """A string that never shows itself in ``repr``, ``str``, f-strings or logs.

    ``reveal()`` returns the value; only the template context calls it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __len__(self) -> int:
        return len(self._value)


class SettingsError(ValueError):
    """A setting has a value the kit does not accept.

    ``key`` is the settings-file key (or stack output name), ``value`` the offending
    value (a :class:`Secret` when the value is secret, so it stays hidden), and
    ``allowed`` says what would be accepted.
    """

    def __init__(self, key: str, value: Any, allowed: str, secret: bool = False):
        if secret and value is not MISSING and not isinstance(value, Secret):
            value = Secret(value if isinstance(value, str) else repr(value))
        self.key, self.value, self.allowed = key, value, allowed
        if value is MISSING:
            message = f"setting {key!r} is missing; required: {allowed}"
        else:
            message = f"setting {key!r} has value {_shown(value)}; allowed: {allowed}"
        super().__init__(message)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: SettingsError's value when a required setting is absent.
MISSING = _Missing()


def _shown(value: Any) -> str:
    if isinstance(value, Secret):
        return repr(REDACTED)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_shown(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _is_secret_field(name: str) -> bool:
    return name in SECRET_FIELDS


@dataclass(frozen=True)
class Deployment:
    """One MLflow server: where it runs, what it connects to, how it is exposed.

    Construct it through :func:`deployment_from_outputs` or :func:`deployment_from_file`;
    direct construction validates the same way. Secret fields accept a plain ``str``
    and store a :class:`Secret`.
    """

    host: str
    ssh_user: str
    cloud: str
    environment: str
    backend_store_uri: Secret
    artifacts_destination: str
    admin_password: Secret
    ssh_port: int = 22
    ssh_key_file: str | None = None
    #: When set, the host key must be listed in this file (unknown keys are refused).
    known_hosts_file: str | None = None
    #: An SSH ProxyCommand, for hosts reached through GCP IAP or AWS Session Manager, e.g.
    #: ``gcloud compute start-iap-tunnel VM 22 --listen-on-stdin --zone Z``.
    ssh_proxy_command: str | None = None
    #: The name users reach. Default: ``domain`` with Let's Encrypt, else ``host``.
    public_host: str | None = None
    #: Default: ``https://<public_host>``.
    tracking_url: str | None = None
    admin_username: str = "admin"
    artifact_mode: str = "proxied"
    mlflow_version: str = DEFAULT_MLFLOW_VERSION
    python_version: str = DEFAULT_PYTHON_VERSION
    miniforge_url: str = DEFAULT_MINIFORGE_URL
    miniforge_sha256: str = DEFAULT_MINIFORGE_SHA256
    extra_ca_certs: tuple[str, ...] = ()
    tls_mode: str = "self-signed"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    domain: str | None = None
    acme_email: str | None = None
    storage_env: dict[str, str] = field(default_factory=dict)
    storage_secret_env: dict[str, Secret] = field(default_factory=dict)
    #: None: sized from the VM at bootstrap time.
    server_instances: int | None = None
    job_execution: bool = False
    #: None: generated on the VM once and kept there.
    flask_secret_key: Secret | None = None
    db_connection_name: str | None = None
    #: What validation changed on the way in (e.g. a rewritten URI scheme), for display.
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain data for printing, with secret values replaced."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "notes":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = REDACTED
            elif f.name == "storage_secret_env":
                value = {k: REDACTED for k in value}
            elif isinstance(value, dict):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @property
    def artifact_scheme(self) -> str:
        """``s3`` or ``gs``: which storage client the server's environment needs."""
        return urlsplit(self.artifacts_destination).scheme


#: Keys a settings file (or the overrides of deployment_from_outputs) may use.
SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(Deployment) if f.name != "notes")
REQUIRED_KEYS = tuple(
    f.name
    for f in dataclasses.fields(Deployment)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)
SECRET_FIELDS = frozenset({"backend_store_uri", "admin_password", "flask_secret_key"})
#: Fields whose values are local file paths; a settings file's relative paths are
#: resolved against the settings file's directory.
PATH_FIELDS = frozenset(
    {"ssh_key_file", "known_hosts_file", "tls_cert_file", "tls_key_file", "extra_ca_certs"}
)


# --------------------------------------------------------------------------- validation


def _set(d: Deployment, name: str, value: Any) -> None:
    object.__setattr__(d, name, value)


def _validate(d: Deployment) -> None:
    notes = list(d.notes)

    _require_str(d, "host")
    _check_host("host", d.host)
    _require_str(d, "ssh_user")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}\$?", d.ssh_user):
        raise SettingsError("ssh_user", d.ssh_user, "a POSIX login name such as 'debian'")
    _check_int("ssh_port", d.ssh_port, 1, 65535)
    _check_optional_str(d, "ssh_key_file")
    _check_optional_str(d, "known_hosts_file")
    _check_optional_str(d, "ssh_proxy_command")
    _check_choice("cloud", d.cloud, CLOUDS)
    _check_choice("environment", d.environment, ENVIRONMENTS)

    _check_choice("tls_mode", d.tls_mode, TLS_MODES)
    _check_tls(d)

    if d.public_host is None:
        _set(d, "public_host", d.domain if d.tls_mode == "letsencrypt" else d.host)
    _require_str(d, "public_host")
    _check_host("public_host", d.public_host)
    if d.tracking_url is None:
        _set(d, "tracking_url", f"https://{_url_host(d.public_host)}")
    _require_str(d, "tracking_url")
    _set(d, "tracking_url", _check_tracking_url(d.tracking_url))

    _set(d, "backend_store_uri", _secret(d, "backend_store_uri"))
    uri, note = check_backend_store_uri(d.backend_store_uri.reveal())
    if note:
        notes.append(note)
        log.info("%s", note)
    _set(d, "backend_store_uri", Secret(uri))

    _require_str(d, "artifacts_destination")
    _check_artifacts_destination(d.cloud, d.artifacts_destination)

    _require_str(d, "admin_username")
    if not _USERNAME.fullmatch(d.admin_username):
        raise SettingsError("admin_username", d.admin_username, "1-64 of letters, digits and _.@+-")
    _set(d, "admin_password", _secret(d, "admin_password"))
    if len(d.admin_password) < MIN_ADMIN_PASSWORD:
        raise SettingsError(
            "admin_password",
            d.admin_password,
            f"at least {MIN_ADMIN_PASSWORD} characters (MLflow's basic-auth rule)",
        )
    _check_printable("admin_password", d.admin_password)

    _check_choice("artifact_mode", d.artifact_mode, ARTIFACT_MODES)
    _require_str(d, "mlflow_version")
    if not _VERSION.fullmatch(d.mlflow_version):
        raise SettingsError("mlflow_version", d.mlflow_version, "a pinned version X.Y.Z")
    _require_str(d, "python_version")
    if not _PYTHON_VERSION.fullmatch(d.python_version):
        raise SettingsError("python_version", d.python_version, "a Python 3 version like 3.11")
    _check_miniforge(d)
    _check_ca_certs(d)
    _set(d, "storage_env", _check_env("storage_env", d.storage_env, secret=False))
    _set(d, "storage_secret_env", _check_env("storage_secret_env", d.storage_secret_env, True))

    if d.server_instances is not None:
        _check_int("server_instances", d.server_instances, 1, MAX_SERVER_INSTANCES)
    if not isinstance(d.job_execution, bool):
        raise SettingsError("job_execution", d.job_execution, "true or false")
    if d.flask_secret_key is not None:
        _set(d, "flask_secret_key", _secret(d, "flask_secret_key"))
        if len(d.flask_secret_key) < MIN_FLASK_SECRET_KEY:
            raise SettingsError(
                "flask_secret_key",
                d.flask_secret_key,
                f"at least {MIN_FLASK_SECRET_KEY} characters, or unset to generate one on the VM",
            )
        _check_printable("flask_secret_key", d.flask_secret_key)
    _check_optional_str(d, "db_connection_name")
    if d.db_connection_name == "":
        _set(d, "db_connection_name", None)
    _set(d, "notes", tuple(notes))


def _require_str(d: Deployment, name: str) -> None:
    value = getattr(d, name)
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(name, value, "a non-empty string")
    if value != value.strip():
        raise SettingsError(name, value, "no leading or trailing whitespace")


def _check_optional_str(d: Deployment, name: str) -> None:
    value = getattr(d, name)
    if value is not None and not isinstance(value, str):
        raise SettingsError(name, value, "a string or unset")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(name, value, f"an integer from {low} to {high}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(name, value, "one of " + ", ".join(choices))


def _check_host(name: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(value):
        raise SettingsError(name, value, "a DNS name or an IP address (no scheme, port or path)")


def _url_host(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def _check_tracking_url(url: str) -> str:
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


def _secret(d: Deployment, name: str) -> Secret:
    value = getattr(d, name)
    if isinstance(value, str):
        value = Secret(value)
    if not isinstance(value, Secret) or not value.reveal():
        raise SettingsError(name, value, "a non-empty string", secret=True)
    return value


def _check_printable(name: str, value: Secret) -> None:
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
        if _BAD_PERCENT.search(part):
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


def _check_artifacts_destination(cloud: str, value: str) -> None:
    schemes = ARTIFACT_SCHEMES[cloud]
    allowed = " or ".join(f"{s}://bucket[/prefix]" for s in schemes) + f" for cloud {cloud!r}"
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError("artifacts_destination", value, allowed)
    if not _BUCKET.fullmatch(parts.netloc) or "//" in parts.path:
        raise SettingsError("artifacts_destination", value, allowed + " with a valid bucket name")


def _check_tls(d: Deployment) -> None:
    if d.tls_mode == "provided":
        for name, marker in (
            ("tls_cert_file", "BEGIN CERTIFICATE"),
            ("tls_key_file", "PRIVATE KEY"),
        ):
            _check_pem_file(name, getattr(d, name), marker, "with tls_mode 'provided'")
    elif d.tls_mode == "letsencrypt":
        if not isinstance(d.domain, str) or not _DNS_NAME.fullmatch(d.domain) or _is_ip(d.domain):
            raise SettingsError(
                "domain", d.domain, "a DNS name pointing at the host (tls_mode 'letsencrypt')"
            )
        if not isinstance(d.acme_email, str) or not _EMAIL.fullmatch(d.acme_email):
            raise SettingsError(
                "acme_email", d.acme_email, "an e-mail address for Let's Encrypt notices"
            )
    for name in ("tls_cert_file", "tls_key_file", "domain", "acme_email"):
        _check_optional_str(d, name)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_pem_file(name: str, path: Any, marker: str, context: str = "") -> None:
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


def _check_miniforge(d: Deployment) -> None:
    _require_str(d, "miniforge_url")
    parts = urlsplit(d.miniforge_url)
    if parts.scheme not in MINIFORGE_URL_SCHEMES or not (parts.netloc or parts.scheme == "file"):
        raise SettingsError(
            "miniforge_url", d.miniforge_url, "an https://, http:// or file:// installer URL"
        )
    if not isinstance(d.miniforge_sha256, str) or not _SHA256.fullmatch(d.miniforge_sha256):
        raise SettingsError(
            "miniforge_sha256",
            d.miniforge_sha256,
            "64 hexadecimal digits (sha256 of the installer)",
        )
    _set(d, "miniforge_sha256", d.miniforge_sha256.lower())


def _check_ca_certs(d: Deployment) -> None:
    certs = d.extra_ca_certs
    if isinstance(certs, str) or not isinstance(certs, (list, tuple)):
        raise SettingsError("extra_ca_certs", certs, "a list of PEM CA certificate file paths")
    for path in certs:
        _check_pem_file("extra_ca_certs", path, "BEGIN CERTIFICATE")
    names = [Path(p).name for p in certs]
    if len(set(names)) != len(names):
        raise SettingsError("extra_ca_certs", certs, "files with distinct base names")
    _set(d, "extra_ca_certs", tuple(certs))


def _check_env(name: str, env: Any, secret: bool) -> dict:
    if not isinstance(env, Mapping):
        raise SettingsError(
            name, env, "a mapping of environment variable names to strings", secret=secret
        )
    out = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
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


# --------------------------------------------------------------------------- sources


def deployment_from_outputs(
    outputs: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Deployment:
    """Build a Deployment from ``pulumi stack output --json --show-secrets``.

    ``overrides`` uses settings-file keys (e.g. ``ssh_key_file``, ``miniforge_url``,
    ``extra_ca_certs``) and wins over the outputs; secret values there may use the
    ``{"env": VAR}`` / ``{"file": PATH}`` indirections.

    Example::

        deployment_from_outputs(json.loads(out), {"ssh_key_file": "~/.ssh/id_ed25519"})
    """
    if not isinstance(outputs, Mapping):
        raise SettingsError("outputs", type(outputs).__name__, "a JSON object of stack outputs")
    for name in contract.COMMON_OUTPUTS:
        if name not in outputs:
            raise SettingsError(
                name,
                MISSING,
                "present in the stack outputs (every stack exports "
                + ", ".join(contract.COMMON_OUTPUTS)
                + ")",
            )
        value = outputs[name]
        if not isinstance(value, str):
            raise SettingsError(
                name,
                value,
                "a string output (was the document written with --show-secrets?)",
                secret=name in contract.SECRET_OUTPUTS,
            )
    values: dict[str, Any] = {
        "cloud": outputs[contract.CLOUD],
        "host": outputs[contract.HOST],
        "ssh_user": outputs[contract.SSH_USER],
        "tracking_url": outputs[contract.TRACKING_URL],
        "backend_store_uri": Secret(outputs[contract.BACKEND_STORE_URI]),
        "artifacts_destination": outputs[contract.ARTIFACTS_DESTINATION],
        "admin_password": Secret(outputs[contract.ADMIN_PASSWORD]),
        "environment": outputs[contract.ENVIRONMENT],
    }
    connection = outputs.get(contract.DB_CONNECTION_NAME)
    if connection:
        values["db_connection_name"] = connection
    if overrides:
        _check_keys(overrides, "overrides")
        values.update(_resolve_secrets(overrides, base=None))
    return Deployment(**values)


def deployment_from_file(path: str | os.PathLike) -> Deployment:
    """Build a Deployment from a YAML settings file (see provisioning/settings.example.yaml).

    Relative file paths in it (TLS files, CA certificates, SSH key, ``{"file": ...}``
    secrets) are resolved against the settings file's directory.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(
            "settings file", str(path), f"a readable file ({exc.strerror})"
        ) from None
    except yaml.YAMLError as exc:
        # Not str(exc): it quotes the offending line, which may hold a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SettingsError("settings file", str(path), f"valid YAML ({problem}{where})") from None
    if not isinstance(document, Mapping):
        raise SettingsError("settings file", str(path), "a YAML mapping of settings")
    _check_keys(document, "settings file")
    for key in REQUIRED_KEYS:
        if key not in document:
            raise SettingsError(key, MISSING, f"present in the settings file {path} (required)")
    values = _resolve_secrets(document, base=path.parent)
    return Deployment(**values)


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    for key in values:
        if key not in SETTINGS_KEYS:
            # The value is not shown: a misspelt key may well hold a secret.
            raise SettingsError(
                str(key), values[key], f"a known {where} key: " + ", ".join(SETTINGS_KEYS), True
            )


def _resolve_secrets(values: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_FIELDS:
            value = None if value is None else _secret_value(key, value, base)
        elif key == "storage_secret_env" and isinstance(value, Mapping):
            value = {k: _secret_value(f"{key}.{k}", v, base) for k, v in value.items()}
        elif key in PATH_FIELDS and base is not None:
            value = _resolve_paths(value, base)
        out[key] = value
    return out


def _resolve_paths(value: Any, base: Path) -> Any:
    def one(p: Any) -> Any:
        if isinstance(p, str) and p:
            expanded = Path(p).expanduser()
            return str(expanded if expanded.is_absolute() else base / expanded)
        return p

    if isinstance(value, list | tuple):
        return tuple(one(p) for p in value)
    return one(value)


def _secret_value(key: str, value: Any, base: Path | None) -> Secret:
    """A secret written inline, or read from ``{"env": VAR}`` or ``{"file": PATH}``."""
    allowed = 'a string, {"env": VARIABLE} or {"file": PATH}'
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    if not isinstance(value, Mapping) or len(value) != 1:
        raise SettingsError(key, value, allowed, secret=True)
    ((kind, ref),) = value.items()
    if kind == "env":
        if not isinstance(ref, str) or not _ENV_NAME.fullmatch(ref):
            raise SettingsError(key, value, allowed)
        if ref not in os.environ:
            raise SettingsError(key, value, f"environment variable {ref} set (it is not)")
        return Secret(os.environ[ref])
    if kind == "file":
        if not isinstance(ref, str) or not ref:
            raise SettingsError(key, value, allowed)
        file = Path(ref).expanduser()
        if base is not None and not file.is_absolute():
            file = base / file
        try:
            text = file.read_text()
        except OSError as exc:
            raise SettingsError(
                key, value, f"a readable secret file ({file}: {exc.strerror})"
            ) from None
        # One trailing newline is the editor's, not the secret's.
        return Secret(text.removesuffix("\n").removesuffix("\r"))
    raise SettingsError(key, value, allowed, secret=True)
