"""Where a Deployment comes from: stack outputs, or a YAML settings file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from provisioning.settings.deployment import (
    PATH_FIELDS,
    REQUIRED_KEYS,
    SECRET_FIELDS,
    SETTINGS_KEYS,
    Deployment,
)
from provisioning.settings.rules import ENV_NAME
from provisioning.settings.secret import MISSING, Secret, SettingsError
from stacks import contract


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
    topology = outputs.get(contract.TOPOLOGY, "single")
    group = topology == "group"
    if topology not in ("single", "group"):
        raise SettingsError(contract.TOPOLOGY, topology, "single or group")
    if group and not (overrides or {}).get("hosts"):
        # Its host is the load balancer, not a server: bootstrapping it would reach no VM.
        raise SettingsError(
            "hosts",
            MISSING,
            "listed for a group stack: the cloud picks the group's instances after the "
            "deploy, so the stack cannot list them (fab --stack lists them from the cloud, "
            "provisioning.group_instances; or give them in the --settings file)",
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
    instance = outputs.get(contract.DB_INSTANCE_ID)
    location = outputs.get(
        {"aws": contract.REGION, "gcp": contract.GCP_PROJECT}.get(values["cloud"], "")
    )
    if instance and location:
        values["db_instance"], values["db_location"] = instance, location
    if group:
        # The balancer's name is what users reach (the host and tracking_url outputs).
        values["public_host"] = outputs[contract.HOST]
        # The secrets every instance of the group must share (provisioning.settings.group).
        for name in (contract.FLASK_SECRET_KEY, contract.KEK_PASSPHRASE):
            if outputs.get(name):
                values[name] = Secret(outputs[name])
    if overrides:
        _check_keys(overrides, "overrides")
        values.update(_resolve_secrets(overrides, base=None))
        if overrides.get("hosts") and "host" not in overrides:
            values["host"] = _first_host(overrides["hosts"])
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
    if document.get("hosts") not in (None, [], ()):
        if "host" in document:
            raise SettingsError(
                "host", document["host"], "unset when hosts is given (one or the other)"
            )
        document = {**document, "host": _first_host(document["hosts"])}
    for key in REQUIRED_KEYS:
        if key not in document:
            raise SettingsError(key, MISSING, f"present in the settings file {path} (required)")
    values = _resolve_secrets(document, base=path.parent)
    return Deployment(**values)


def _first_host(hosts: Any) -> Any:
    """The host a group's deployment starts from (validation checks the whole list)."""
    if not isinstance(hosts, list | tuple) or not hosts:
        raise SettingsError("hosts", hosts, "a list of 2-10 distinct hosts")
    return hosts[0]


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
        if not isinstance(ref, str) or not ENV_NAME.fullmatch(ref):
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
