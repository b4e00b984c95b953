"""Validation of a whole Deployment, run by ``Deployment.__post_init__``."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from provisioning.lock import LOCK_PYTHON, available, command, find
from provisioning.settings.auth import validate_auth
from provisioning.settings.group import check_group_database, validate_group
from provisioning.settings.rules import (
    ARTIFACT_MODES,
    CALENDAR,
    CLOUDS,
    DATABASE_BACKUPS,
    DB_INSTANCE,
    DB_LOCATION,
    DB_TLS_MODES,
    ENVIRONMENTS,
    GC_AGE,
    MAX_MODEL_WORKERS,
    MAX_SERVER_INSTANCES,
    MIN_ADMIN_PASSWORD,
    MIN_FLASK_SECRET_KEY,
    MIN_KEK_PASSPHRASE,
    MINIFORGE_RELEASE,
    MINIFORGE_URL_SCHEMES,
    MODEL_MEMORY_MB,
    MODEL_NAME,
    MODEL_NAME_ALLOWED,
    PYTHON_VERSION,
    SERVER_TMP_MIN_FREE_GIB,
    SHA256,
    USERNAME,
    check_artifacts_destination,
    check_backend_store_uri,
    check_choice,
    check_env,
    check_host,
    check_int,
    check_pem_file,
    check_printable,
    check_public_key,
    check_server_tmp_dir,
    check_tracking_url,
    installer_python,
    url_host,
)
from provisioning.settings.secret import MISSING, Secret, SettingsError
from stacks import rules

if TYPE_CHECKING:
    from provisioning.settings.deployment import Deployment

log = logging.getLogger(__name__)


def _set(d: Deployment, name: str, value: Any) -> None:
    object.__setattr__(d, name, value)


def validate(d: Deployment) -> None:
    notes = list(d.notes)

    validate_group(d)
    _require_str(d, "host")
    check_host("host", d.host)
    _require_str(d, "ssh_user")
    _rule("ssh_user", rules.login_user, d.ssh_user)
    check_int("ssh_port", d.ssh_port, 1, 65535)
    _check_optional_str(d, "ssh_key_file")
    _check_optional_str(d, "known_hosts_file")
    if d.ssh_host_key is not None and not check_public_key(d.ssh_host_key):
        raise SettingsError(
            "ssh_host_key", d.ssh_host_key, "an OpenSSH public key such as 'ssh-ed25519 AAAA...'"
        )
    _check_optional_str(d, "ssh_proxy_command")
    check_choice("cloud", d.cloud, CLOUDS)
    check_choice("environment", d.environment, ENVIRONMENTS)

    _rule("tls_mode", rules.tls_mode, d.tls_mode)
    _check_tls(d)

    if d.public_host is None:
        _set(d, "public_host", d.domain if d.tls_mode == "letsencrypt" else d.host)
    _require_str(d, "public_host")
    check_host("public_host", d.public_host)
    if d.tracking_url is None:
        _set(d, "tracking_url", f"https://{url_host(d.public_host)}")
    _require_str(d, "tracking_url")
    _set(d, "tracking_url", check_tracking_url(d.tracking_url))

    _set(d, "backend_store_uri", _secret(d, "backend_store_uri"))
    uri, note = check_backend_store_uri(d.backend_store_uri.reveal())
    if note:
        notes.append(note)
        log.info("%s", note)
    _set(d, "backend_store_uri", Secret(uri))

    _require_str(d, "artifacts_destination")
    check_artifacts_destination(d.cloud, d.artifacts_destination)
    _check_db_tls(d)

    _require_str(d, "admin_username")
    if not USERNAME.fullmatch(d.admin_username):
        raise SettingsError("admin_username", d.admin_username, "1-64 of letters, digits and _.@+-")
    _set(d, "admin_password", _secret(d, "admin_password"))
    if len(d.admin_password) < MIN_ADMIN_PASSWORD:
        raise SettingsError(
            "admin_password",
            d.admin_password,
            f"at least {MIN_ADMIN_PASSWORD} characters (MLflow's basic-auth rule)",
        )
    check_printable("admin_password", d.admin_password)

    check_choice("artifact_mode", d.artifact_mode, ARTIFACT_MODES)
    _require_str(d, "mlflow_version")
    _rule("mlflow_version", rules.mlflow_version, d.mlflow_version)
    _require_str(d, "python_version")
    if not PYTHON_VERSION.fullmatch(d.python_version):
        raise SettingsError("python_version", d.python_version, "a Python 3 version like 3.11")
    _check_miniforge(d)
    _check_ca_certs(d)
    _set(d, "storage_env", check_env("storage_env", d.storage_env, secret=False))
    _set(d, "storage_secret_env", check_env("storage_secret_env", d.storage_secret_env, True))

    if d.server_instances is not None:
        check_int("server_instances", d.server_instances, 1, MAX_SERVER_INSTANCES)
    check_int("keep_environments", d.keep_environments, 2, 20)
    if not isinstance(d.job_execution, bool):
        raise SettingsError("job_execution", d.job_execution, "true or false")
    if not isinstance(d.telemetry, bool):
        raise SettingsError("telemetry", d.telemetry, "true or false")
    _check_stream_downloads(d)
    check_server_tmp_dir(d.server_tmp_dir)
    check_int("server_tmp_min_free_gib", d.server_tmp_min_free_gib, *SERVER_TMP_MIN_FREE_GIB)
    _check_models(d)
    if d.db_max_connections is not None:
        check_int("db_max_connections", d.db_max_connections, 20, 100_000)
    check_group_database(d)
    _check_generated_secret(d, "flask_secret_key", MIN_FLASK_SECRET_KEY)
    _check_generated_secret(d, "kek_passphrase", MIN_KEK_PASSPHRASE)
    _check_optional_str(d, "db_connection_name")
    if d.db_connection_name == "":
        _set(d, "db_connection_name", None)
    _check_backups(d)
    validate_auth(d)
    _check_lock(d)
    _check_offline(d)
    _set(d, "notes", tuple(notes))


def _check_lock(d: Deployment) -> None:
    if not isinstance(d.install_from_lock, bool):
        raise SettingsError("install_from_lock", d.install_from_lock, "true or false")
    if not d.install_from_lock:
        return
    oidc = d.oidc_plugin_version if d.auth == "oidc" else None
    python = tuple(int(p) for p in d.python_version.split(".")[:2])
    if python < tuple(int(p) for p in LOCK_PYTHON.split(".")):
        raise SettingsError(
            "python_version", d.python_version,
            f"{LOCK_PYTHON} or later with install_from_lock (the locks' oldest Python)",
        )  # fmt: skip
    if find(d.mlflow_version, oidc) is None:
        with_plugin = f" with mlflow-oidc-auth {oidc}" if oidc else ""
        versions = ", ".join(available(oidc)) or "none"
        raise SettingsError(
            "mlflow_version", d.mlflow_version,
            f"a version with a committed lock{with_plugin} ({versions}); make one with "
            f"`{command(d.mlflow_version, oidc)}`, or set install_from_lock: false to resolve packages at install time",
        )  # fmt: skip


def _check_offline(d: Deployment) -> None:
    if not isinstance(d.offline_install, bool):
        raise SettingsError("offline_install", d.offline_install, "true or false")
    _check_optional_str(d, "offline_cache_dir")
    if not d.offline_install:
        return
    if not d.install_from_lock:
        raise SettingsError(
            "offline_install", d.offline_install,
            "false with install_from_lock: false (the host's wheels are the lock's)",
        )  # fmt: skip
    python = ".".join(d.python_version.split(".")[:2])
    known = installer_python(d.miniforge_sha256)
    if known and python != known:
        raise SettingsError(
            "python_version", d.python_version,
            f"{known} with offline_install and the default Miniforge "
            f"{MINIFORGE_RELEASE} (the environment is a venv of the installer's own Python)",
        )  # fmt: skip


def _check_stream_downloads(d: Deployment) -> None:
    if d.stream_downloads is None:
        _set(d, "stream_downloads", d.auth == "basic" and not d.job_execution)
        return
    if not isinstance(d.stream_downloads, bool):
        raise SettingsError("stream_downloads", d.stream_downloads, "true, false or unset")
    if d.stream_downloads and d.auth != "basic":
        raise SettingsError(
            "stream_downloads", True, f"false with auth {d.auth!r}: it wraps basic-auth only"
        )
    if d.stream_downloads and d.job_execution:
        # mlflow server shares the jobs' gateway token only when the app is named
        # basic-auth (mlflow/server/__init__.py); under another name jobs lose it.
        raise SettingsError(
            "stream_downloads", True, "false while job_execution is true (the jobs' token)"
        )


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


def _secret(d: Deployment, name: str) -> Secret:
    value = getattr(d, name)
    if isinstance(value, str):
        value = Secret(value)
    if not isinstance(value, Secret) or not value.reveal():
        raise SettingsError(name, value, "a non-empty string", secret=True)
    return value


def _check_tls(d: Deployment) -> None:
    if d.tls_mode == "provided":
        for name, marker in (
            ("tls_cert_file", "BEGIN CERTIFICATE"),
            ("tls_key_file", "PRIVATE KEY"),
        ):
            check_pem_file(name, getattr(d, name), marker, "with tls_mode 'provided'")
    elif d.tls_mode == "letsencrypt":
        for key, value in (("domain", d.domain), ("acme_email", d.acme_email)):
            if value is None:
                raise SettingsError(key, MISSING, "set, with tls_mode 'letsencrypt'")
    for name in ("tls_cert_file", "tls_key_file", "domain", "acme_email"):
        _check_optional_str(d, name)
    acme = urlsplit(d.acme_directory_url) if isinstance(d.acme_directory_url, str) else None
    if acme is None or acme.scheme != "https" or not acme.hostname:
        raise SettingsError(
            "acme_directory_url", d.acme_directory_url, "an https:// ACME directory URL"
        )
    if d.acme_ca_cert_file is not None:
        check_pem_file("acme_ca_cert_file", d.acme_ca_cert_file, "BEGIN CERTIFICATE")
    if d.domain is not None:
        _rule("domain", rules.domain, d.domain)
    if d.acme_email is not None:
        _rule("acme_email", rules.email, d.acme_email)


def _rule(key: str, rule, value: Any) -> None:
    """Apply a rule shared with the stack settings (stacks/rules.py), naming the key."""
    try:
        rule(value)
    except rules.RuleViolation as violation:
        raise SettingsError(key, violation.value, violation.allowed) from None


def _check_miniforge(d: Deployment) -> None:
    _require_str(d, "miniforge_url")
    parts = urlsplit(d.miniforge_url)
    if parts.scheme not in MINIFORGE_URL_SCHEMES or not (parts.netloc or parts.scheme == "file"):
        raise SettingsError(
            "miniforge_url", d.miniforge_url, "an https://, http:// or file:// installer URL"
        )
    if not isinstance(d.miniforge_sha256, str) or not SHA256.fullmatch(d.miniforge_sha256):
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
        check_pem_file("extra_ca_certs", path, "BEGIN CERTIFICATE")
    names = [Path(p).name for p in certs]
    if len(set(names)) != len(names):
        raise SettingsError("extra_ca_certs", certs, "files with distinct base names")
    _set(d, "extra_ca_certs", tuple(certs))


def _check_db_tls(d: Deployment) -> None:
    check_choice("db_tls", d.db_tls, DB_TLS_MODES)
    if d.db_ca_cert_file is not None:
        check_pem_file("db_ca_cert_file", d.db_ca_cert_file, "BEGIN CERTIFICATE")
    if d.db_ca_url is not None:
        parts = urlsplit(d.db_ca_url) if isinstance(d.db_ca_url, str) else None
        if parts is None or parts.scheme != "https" or not parts.hostname:
            raise SettingsError("db_ca_url", d.db_ca_url, "an https:// URL of a PEM bundle")
    if d.db_ca_pem is not None and (
        not isinstance(d.db_ca_pem, str) or "-----BEGIN CERTIFICATE-----" not in d.db_ca_pem
    ):
        raise SettingsError("db_ca_pem", d.db_ca_pem, "PEM text of a CA certificate")
    given = [k for k in ("db_ca_cert_file", "db_ca_url", "db_ca_pem") if getattr(d, k) is not None]
    if len(given) > 1:
        raise SettingsError(
            given[1], getattr(d, given[1]), f"unset when {given[0]} is set (one CA)"
        )


def _check_models(d: Deployment) -> None:
    check_int("model_workers", d.model_workers, 1, MAX_MODEL_WORKERS)
    check_int("model_memory_mb", d.model_memory_mb, *MODEL_MEMORY_MB)
    check_int("model_follow_seconds", d.model_follow_seconds, 10, 86400)
    endpoints = d.model_endpoints
    if not isinstance(endpoints, dict):
        raise SettingsError(
            "model_endpoints", endpoints, "a mapping of model names to {workers, memory_mb}"
        )
    for name, sizes in endpoints.items():
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise SettingsError(
                f"model_endpoints.{name}", sizes, f"a model name of {MODEL_NAME_ALLOWED}"
            )
        if not isinstance(sizes, dict) or not sizes or set(sizes) - {"workers", "memory_mb"}:
            raise SettingsError(
                f"model_endpoints.{name}", sizes, "a mapping with workers and/or memory_mb"
            )
        if "workers" in sizes:
            check_int(f"model_endpoints.{name}.workers", sizes["workers"], 1, MAX_MODEL_WORKERS)
        if "memory_mb" in sizes:
            check_int(f"model_endpoints.{name}.memory_mb", sizes["memory_mb"], *MODEL_MEMORY_MB)
    _set(d, "model_endpoints", {name: dict(sizes) for name, sizes in endpoints.items()})


def _check_generated_secret(d: Deployment, name: str, minimum: int) -> None:
    """A secret the VM generates when the settings do not give it."""
    if getattr(d, name) is None:
        return
    _set(d, name, _secret(d, name))
    if len(getattr(d, name)) < minimum:
        raise SettingsError(
            name,
            getattr(d, name),
            f"at least {minimum} characters, or unset to generate one on the VM",
        )
    check_printable(name, getattr(d, name))


def _check_backups(d: Deployment) -> None:
    """Backups, garbage collection and metrics."""
    for name, pattern, allowed in (
        ("db_instance", DB_INSTANCE, "an RDS DB instance identifier or a Cloud SQL instance name"),
        ("db_location", DB_LOCATION, "an AWS region or a GCP project ID"),
    ):
        value = getattr(d, name)
        if value == "":
            _set(d, name, None)
        elif value is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
            raise SettingsError(name, value, allowed)
    check_choice("database_backup", d.database_backup, DATABASE_BACKUPS)
    if d.database_backup == "managed":
        if d.cloud not in ("aws", "gcp"):
            raise SettingsError(
                "database_backup", d.database_backup, "pg_dump or auto with cloud 'local'"
            )
        for name in ("db_instance", "db_location"):
            if getattr(d, name) is None:
                raise SettingsError(name, MISSING, "set, with database_backup 'managed'")
    if not isinstance(d.gc_enabled, bool):
        raise SettingsError("gc_enabled", d.gc_enabled, "true or false")
    age = GC_AGE.fullmatch(d.gc_older_than) if isinstance(d.gc_older_than, str) else None
    if not d.gc_older_than or age is None or not any(age.groupdict().values()):
        raise SettingsError(
            "gc_older_than", d.gc_older_than, "an age like 30d, 12h or 1d2h3m4s (mlflow gc)"
        )
    if not isinstance(d.gc_schedule, str) or not CALENDAR.fullmatch(d.gc_schedule.strip()):
        raise SettingsError(
            "gc_schedule", d.gc_schedule, "a systemd OnCalendar= expression such as daily"
        )
    cidrs = d.metrics_allowed_cidrs
    if isinstance(cidrs, str) or not isinstance(cidrs, (list, tuple)):
        raise SettingsError("metrics_allowed_cidrs", cidrs, "a list of CIDRs like 10.0.0.0/8")
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except (TypeError, ValueError):
            raise SettingsError(
                "metrics_allowed_cidrs", cidr, "CIDRs like 10.0.0.0/8 (no host bits set)"
            ) from None
    _set(d, "metrics_allowed_cidrs", tuple(cidrs))
