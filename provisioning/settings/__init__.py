"""Deployment settings: everything ``fab bootstrap`` needs to know about one server.

Two sources produce a :class:`Deployment`: the outputs of a Pulumi stack
(:func:`deployment_from_outputs`) and a YAML settings file for hosts Pulumi did
not create (:func:`deployment_from_file`). Both end in the same validation, in
``Deployment.__post_init__``, so a bad value fails before any SSH connection with
a :class:`SettingsError` naming the key, the value (secrets redacted) and what is
allowed.

This package runs on the user's machine, so it imports only the standard library
and PyYAML (no SQLAlchemy, no MLflow).
"""

from provisioning.settings.deployment import (
    PATH_FIELDS,
    REQUIRED_KEYS,
    SECRET_FIELDS,
    SETTINGS_KEYS,
    Deployment,
)
from provisioning.settings.rules import (
    DEFAULT_MINIFORGE_SHA256,
    DEFAULT_MINIFORGE_URL,
    DEFAULT_MLFLOW_VERSION,
    DEFAULT_PYTHON_VERSION,
    check_backend_store_uri,
)
from provisioning.settings.secret import MISSING, REDACTED, Secret, SettingsError
from provisioning.settings.sources import deployment_from_file, deployment_from_outputs

__all__ = [
    "DEFAULT_MINIFORGE_SHA256",
    "DEFAULT_MINIFORGE_URL",
    "DEFAULT_MLFLOW_VERSION",
    "DEFAULT_PYTHON_VERSION",
    "MISSING",
    "PATH_FIELDS",
    "REDACTED",
    "REQUIRED_KEYS",
    "SECRET_FIELDS",
    "SETTINGS_KEYS",
    "Deployment",
    "Secret",
    "SettingsError",
    "check_backend_store_uri",
    "deployment_from_file",
    "deployment_from_outputs",
]
