"""The stack's provider settings: what the explicit ``gcp``/``aws`` provider takes from the stack.

The program declares its own provider (to pin region and default labels), and an
explicit provider reads no stack config by itself: without this module a stack's
``aws:profile``, ``aws:assumeRoles``, ``gcp:credentials`` or
``gcp:impersonateServiceAccount`` would be dropped and the ambient credentials used,
possibly another account's. The keys forwarded are ``stacks/keys.py``
``PROVIDER_KEYS``; ``stacks/config.py`` refuses the others.
"""

from __future__ import annotations

import re
from typing import Any

from stacks import keys
from stacks.config import ConfigReader, SettingError

#: Validated by the cloud's own settings module and passed explicitly.
_VALIDATED = ("project", "region", "zone")
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def provider_options(cloud: str) -> dict[str, Any]:
    """Keyword arguments for ``gcp.Provider`` / ``aws.Provider`` from the stack's config."""
    reader = ConfigReader(cloud)
    options: dict[str, Any] = {}
    for key, (argument, kind) in keys.PROVIDER_KEYS[cloud].items():
        if key in _VALIDATED or reader.get(key) is None:
            continue
        if kind == "secret":
            options[argument] = reader.get_secret(key)
        elif kind == "boolean":
            options[argument] = reader.get_bool(key, False)
        elif kind == "array":
            options[argument] = _strings(reader, key)
        elif kind == "roles":
            options[argument] = assume_roles(reader, key)
        else:
            options[argument] = reader.require(key, "a non-empty string")
    return options


def _strings(reader: ConfigReader, key: str) -> list[str]:
    values = reader.get_list(key)
    if key.endswith("AccountIds"):
        for value in values:
            if not _ACCOUNT_ID.match(value):
                raise SettingError(reader.qualified(key), value, "12-digit AWS account IDs")
    return values


def assume_roles(reader: ConfigReader, key: str) -> list[dict[str, Any]]:
    """``aws:assumeRoles`` (a list of objects with ``roleArn``...) as provider arguments."""
    roles = reader.get_object(key, [])
    allowed = "a list of objects each with a roleArn (and optionally " + ", ".join(
        f for f in keys.ASSUME_ROLE_FIELDS if f != "roleArn"
    )
    if not isinstance(roles, list) or not roles:
        raise SettingError(reader.qualified(key), roles, allowed + ")")
    out = []
    for role in roles:
        if not isinstance(role, dict) or not _ROLE_ARN.match(str(role.get("roleArn", ""))):
            raise SettingError(reader.qualified(key), role, allowed + "); roleArn an IAM role ARN")
        for field in role:
            if field not in keys.ASSUME_ROLE_FIELDS:
                raise SettingError(
                    reader.qualified(key),
                    field,
                    "fields "
                    + ", ".join(keys.ASSUME_ROLE_FIELDS)
                    + keys.nearest(field, keys.ASSUME_ROLE_FIELDS),
                )
        out.append({keys.ASSUME_ROLE_FIELDS[field]: value for field, value in role.items()})
    return out
