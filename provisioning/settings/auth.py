"""The auth settings: ``auth`` (basic or oidc), the OpenID Connect client, and ``permissions``.

``permissions`` is normalised here to plain data (it is printed by ``redacted()``)::

    {"default": "READ" | None, "exclusive": False,
     "users":  {"alice@example.com": {"experiments": {"churn": "EDIT"}, "registered_models": {...}}},
     "groups": {"team-a": {"experiments": {...}, "registered_models": {...}}}}

What it means under each mode: ``basic`` has users only (MLflow's basic auth grants to
users; its users are created in MLflow itself, the kit grants to those that exist);
``oidc`` has users and groups (the groups of the groups claim; a user is known to the
server once they have signed in).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from provisioning.settings.secret import MISSING, Secret, SettingsError

if TYPE_CHECKING:
    from provisioning.settings.deployment import Deployment

AUTH_MODES = ("basic", "oidc")
#: mlflow-oidc-auth 10.1.3 runs on Python 3.11 and MLflow 3.16+; 11.x does not import on
#: Python 3.11 (a dataclass field defaults to a mappingproxy), so it needs python_version 3.12.
DEFAULT_OIDC_PLUGIN_VERSION = "10.1.3"
LEVELS = ("READ", "EDIT", "MANAGE")
DEFAULT_LEVELS = (*LEVELS, "NO_PERMISSIONS")
#: What a resource nobody was granted gives under each mode when ``permissions.default`` is
#: unset: MLflow basic auth's READ, and the plugin's deny-by-default.
MODE_DEFAULTS = {"basic": "READ", "oidc": "NO_PERMISSIONS"}
RESOURCES = ("experiments", "registered_models")
PERMISSION_KEYS = ("default", "exclusive", "users", "groups")
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
CLAIM = re.compile(r"^[A-Za-z0-9_:./-]{1,128}$")
NAME = re.compile(r"^[^\x00-\x1f/]{1,256}$")
#: The plugin's settings (environment variables) the kit writes; storage env may not set them.
OIDC_ENV = frozenset(
    {
        "OIDC_DISCOVERY_URL", "OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET",
        "OIDC_REDIRECT_URI", "OIDC_GROUP_NAME", "OIDC_ADMIN_GROUP_NAME", "OIDC_GROUPS_ATTRIBUTE",
        "OIDC_AUDIENCE", "OIDC_USERS_DB_URI", "SECRET_KEY", "SESSION_COOKIE_SECURE",
        "DEFAULT_MLFLOW_PERMISSION", "OIDC_PROVIDER_DISPLAY_NAME",
    }
)  # fmt: skip


def _set(d: Deployment, name: str, value: Any) -> None:
    object.__setattr__(d, name, value)


def validate_auth(d: Deployment) -> None:
    """Check and normalise the auth settings of ``d`` (called by the Deployment's validation)."""
    if d.auth not in AUTH_MODES:
        raise SettingsError("auth", d.auth, "one of " + ", ".join(AUTH_MODES))
    if d.auth == "oidc":
        _check_oidc(d)
    else:
        given = [
            k
            for k in ("oidc_issuer", "oidc_client_id", "oidc_client_secret")
            if getattr(d, k) is not None
        ]
        if given:
            raise SettingsError(given[0], getattr(d, given[0]), "unset unless auth is 'oidc'",
                                secret=given[0] == "oidc_client_secret")  # fmt: skip
    _set(d, "permissions", check_permissions(d.permissions, d.auth))


def _check_oidc(d: Deployment) -> None:
    issuer = d.oidc_issuer
    parts = urlsplit(issuer) if isinstance(issuer, str) else None
    if issuer is None:
        raise SettingsError("oidc_issuer", MISSING, "the provider's issuer URL, with auth 'oidc'")
    if (
        parts is None
        or parts.scheme != "https"
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise SettingsError(
            "oidc_issuer", issuer, "an https:// issuer URL (its discovery document is "
            "<issuer>/.well-known/openid-configuration)"
        )  # fmt: skip
    _set(d, "oidc_issuer", issuer.rstrip("/"))
    if not isinstance(d.oidc_client_id, str) or not d.oidc_client_id.strip():
        raise SettingsError("oidc_client_id", d.oidc_client_id if d.oidc_client_id else MISSING,
                            "the client ID the provider registered for this server")  # fmt: skip
    secret = d.oidc_client_secret
    if isinstance(secret, str):
        secret = Secret(secret)
    if not isinstance(secret, Secret) or not secret.reveal():
        raise SettingsError("oidc_client_secret", secret if secret else MISSING,
                            "the client secret, with auth 'oidc'", secret=True)  # fmt: skip
    if any(ch in secret.reveal() for ch in "\n\r\0"):
        raise SettingsError("oidc_client_secret", secret, "a single line", secret=True)
    _set(d, "oidc_client_secret", secret)
    _set(d, "oidc_allowed_groups", _names("oidc_allowed_groups", d.oidc_allowed_groups, True))
    _set(d, "oidc_admin_groups", _names("oidc_admin_groups", d.oidc_admin_groups, False))
    if not isinstance(d.oidc_groups_claim, str) or not CLAIM.fullmatch(d.oidc_groups_claim):
        raise SettingsError("oidc_groups_claim", d.oidc_groups_claim,
                            "the name of the token claim that lists the user's groups")  # fmt: skip
    version = d.oidc_plugin_version
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise SettingsError("oidc_plugin_version", version, "an mlflow-oidc-auth version X.Y.Z")
    if int(version.split(".")[0]) >= 11 and d.python_version.split(".")[:2] == ["3", "11"]:
        raise SettingsError(
            "oidc_plugin_version", version, "10.x with python_version 3.11 (mlflow-oidc-auth 11 "
            "does not import on Python 3.11), or python_version 3.12"
        )  # fmt: skip


def _names(key: str, value: Any, required: bool) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SettingsError(key, value, "a list of group names")
    for name in value:
        if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
            raise SettingsError(key, value, "group names without commas or surrounding spaces")
    if required and not value:
        raise SettingsError(key, value, "at least one group whose members may sign in")
    return tuple(value)


def check_permissions(value: Any, auth: str) -> dict:
    """The ``permissions`` section, checked and normalised (see the module docstring)."""
    key = "permissions"
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SettingsError(key, value, "a mapping with " + ", ".join(PERMISSION_KEYS))
    for name in value:
        if name == "workspaces":
            raise SettingsError("permissions.workspaces", value[name],
                                "unset: the kit does not enable MLflow workspaces")  # fmt: skip
        if name not in PERMISSION_KEYS:
            raise SettingsError(
                f"{key}.{name}", value[name], "one of " + ", ".join(PERMISSION_KEYS)
            )
    default = value.get("default")
    if default is not None and default not in DEFAULT_LEVELS:
        raise SettingsError("permissions.default", default, "one of " + ", ".join(DEFAULT_LEVELS))
    exclusive = value.get("exclusive", False)
    if not isinstance(exclusive, bool):
        raise SettingsError("permissions.exclusive", exclusive, "true or false")
    if exclusive and auth != "oidc":
        raise SettingsError("permissions.exclusive", exclusive,
                            "false with auth 'basic' (MLflow lists grants per user only)")  # fmt: skip
    out: dict = {"default": default, "exclusive": exclusive, "users": {}, "groups": {}}
    for kind in ("users", "groups"):
        subjects = value.get(kind) or {}
        where = f"{key}.{kind}"
        if not isinstance(subjects, Mapping):
            raise SettingsError(where, subjects, "a mapping of names to their grants")
        if kind == "groups" and subjects and auth != "oidc":
            raise SettingsError(where, dict(subjects),
                                "unset with auth 'basic' (MLflow's basic auth grants to users only)")  # fmt: skip
        for subject, grants in subjects.items():
            if not isinstance(subject, str) or not NAME.fullmatch(subject):
                raise SettingsError(where, subject, "names without slashes or control characters")
            out[kind][subject] = _grants(f"{where}.{subject}", grants)
    return out


def _grants(where: str, grants: Any) -> dict:
    if not isinstance(grants, Mapping):
        raise SettingsError(where, grants, "a mapping of " + " and ".join(RESOURCES))
    out = {}
    for resource, named in grants.items():
        if resource not in RESOURCES:
            raise SettingsError(f"{where}.{resource}", named, "one of " + ", ".join(RESOURCES))
        if not isinstance(named, Mapping):
            raise SettingsError(
                f"{where}.{resource}", named, "a mapping of names to READ, EDIT or MANAGE"
            )
        for name, level in named.items():
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise SettingsError(f"{where}.{resource}", name, "a name without slashes")
            if level not in LEVELS:
                raise SettingsError(
                    f"{where}.{resource}.{name}", level, "one of " + ", ".join(LEVELS)
                )
        out[resource] = dict(named)
    return out


def default_permission(d: Deployment) -> str:
    """What a resource nobody was granted gives: the setting, else the mode's own default."""
    return d.permissions.get("default") or MODE_DEFAULTS[d.auth]
