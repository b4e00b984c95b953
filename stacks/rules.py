"""Validation rules shared by the stack settings and the bootstrap settings.

``stacks/config.py`` (stack config, keys such as ``mlflow-server:tlsMode``) and
``provisioning/settings.py`` (settings files and stack outputs, keys such as
``tls_mode``) check the same values; both take the rule from here so the two can
never disagree about what is valid. Standard library only: provisioning imports
this on machines that have no Pulumi SDK.

Every check returns the value as the caller should store it, or raises
:class:`RuleViolation` carrying the offending value and what is allowed; the caller
adds the key in its own vocabulary (``mlflow-server:sshUser`` or ``ssh_user``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stacks import contract

TLS_MODES = ("self-signed", "provided", "letsencrypt")

#: ``single``: one VM with its own address; ``group``: several instances behind the
#: cloud's own HTTPS load balancer, with a highly available database.
TOPOLOGIES = contract.TOPOLOGIES
TOPOLOGIES_ALLOWED = "one of " + ", ".join(TOPOLOGIES)
#: Instances in a group: two at least (one alone is the single topology), ten at most
#: (each holds connections to the one database; see db_max_connections).
GROUP_SIZE_RANGE = (2, 10)
#: What a group's instances serve the load balancer: never Let's Encrypt, whose HTTP-01
#: challenge would reach whichever instance the balancer picks.
GROUP_TLS_MODES = ("self-signed", "provided")
TLS_MODES_ALLOWED = "one of " + ", ".join(TLS_MODES)

#: Pinned MLflow versions only: ``3.17.2``, never ``3.17`` or ``>=3``.
VERSION_ALLOWED = "a pinned version X.Y.Z such as 3.17.2"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

EMAIL_ALLOWED = "an email address such as ops@example.com"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

DOMAIN_ALLOWED = "a lowercase DNS name such as mlflow.example.com (no IP address, no trailing dot)"
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

#: Users the server itself runs as or that sshd refuses by default; the login user
#: must be a separate, sudo-capable account.
RESERVED_LOGIN_USERS = ("root", "mlflow")
LOGIN_USER_ALLOWED = (
    "a Linux user name (lowercase letters, digits, '_' and '-', starting with a letter or '_', "
    "at most 32) other than " + " and ".join(RESERVED_LOGIN_USERS)
)
_LOGIN_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

#: MLflow's basic auth refuses a shorter admin password (``mlflow.server.auth``).
MIN_ADMIN_PASSWORD = 12
ADMIN_PASSWORD_ALLOWED = (
    f"a password of at least {MIN_ADMIN_PASSWORD} characters (MLflow's basic-auth rule), "
    "on one line, without NUL characters"
)

#: GCP label rules (the stricter of the two clouds; AWS tags accept all of these):
#: https://cloud.google.com/compute/docs/labeling-resources#requirements
LABEL_NAME_ALLOWED = (
    "label names of 1-63 lowercase letters, digits, '-' and '_', starting with a letter"
)
LABEL_VALUE_ALLOWED = "label values of at most 63 lowercase letters, digits, '-' and '_'"
_LABEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
#: Label names the kit sets itself (stacks/contract.py); a stack may not set them.
RESERVED_LABEL_PREFIX = contract.LABEL_PREFIX
#: GCP allows at most 64 labels per resource; the kit uses three of them.
MAX_USER_LABELS = 61


class RuleViolation(ValueError):
    """``value`` breaks a rule; ``allowed`` says what the rule accepts."""

    def __init__(self, value: Any, allowed: str):
        self.value, self.allowed = value, allowed
        super().__init__(f"{value!r}: allowed {allowed}")


def tls_mode(value: Any) -> str:
    if value not in TLS_MODES:
        raise RuleViolation(value, TLS_MODES_ALLOWED)
    return value


def topology(value: Any) -> str:
    if value not in TOPOLOGIES:
        raise RuleViolation(value, TOPOLOGIES_ALLOWED)
    return value


_PEM_CERTIFICATE = re.compile(
    r"^\s*(-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----\s*)+$"
)
_PEM_KEY = re.compile(
    r"^\s*-----BEGIN (RSA |EC )?PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]+?"
    r"-----END (RSA |EC )?PRIVATE KEY-----\s*$"
)
CERTIFICATE_PEM_ALLOWED = (
    "PEM text of the certificate, then any intermediate certificates "
    "(-----BEGIN CERTIFICATE----- blocks only)"
)
PRIVATE_KEY_PEM_ALLOWED = (
    "PEM text of one unencrypted RSA or ECDSA private key (-----BEGIN PRIVATE KEY-----, "
    "RSA PRIVATE KEY or EC PRIVATE KEY), stored as a secret"
)


def certificate_pem(value: Any) -> str:
    """A certificate chain as PEM text, leaf first: what both clouds' load balancers take."""
    if not isinstance(value, str) or not _PEM_CERTIFICATE.match(value):
        shown = value[:40] if isinstance(value, str) else value
        raise RuleViolation(shown, CERTIFICATE_PEM_ALLOWED)
    return value


def private_key_pem(value: Any) -> str:
    """One private key as PEM text. A violation never shows the key."""
    if not isinstance(value, str) or not _PEM_KEY.match(value):
        raise RuleViolation("[secret: not a PEM private key]", PRIVATE_KEY_PEM_ALLOWED)
    return value


def mlflow_version(value: Any) -> str:
    if not isinstance(value, str) or not _VERSION.match(value):
        raise RuleViolation(value, VERSION_ALLOWED)
    return value


def email(value: Any) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value):
        raise RuleViolation(value, EMAIL_ALLOWED)
    return value


def domain(value: Any) -> str:
    """A DNS name a certificate can be issued for and users can type."""
    if not isinstance(value, str) or not _DOMAIN.match(value):
        raise RuleViolation(value, DOMAIN_ALLOWED)
    return value


def login_user(value: Any) -> str:
    """The SSH login user with sudo: a plain Linux name, never root or mlflow."""
    if not isinstance(value, str) or not _LOGIN_USER.match(value):
        raise RuleViolation(value, LOGIN_USER_ALLOWED)
    if value in RESERVED_LOGIN_USERS:
        raise RuleViolation(value, LOGIN_USER_ALLOWED)
    return value


def admin_password(value: Any) -> str:
    """The MLflow admin password: MLflow's minimum length, and one line (env files on the VM
    hold it). A violation names only the length, never the password."""
    if not isinstance(value, str):
        raise RuleViolation(f"[secret: {type(value).__name__}]", ADMIN_PASSWORD_ALLOWED)
    if len(value) < MIN_ADMIN_PASSWORD or any(ch in value for ch in "\n\r\0"):
        shown = f"[secret: {len(value)} characters"
        shown += ", with a line break or NUL]" if len(value) >= MIN_ADMIN_PASSWORD else "]"
        raise RuleViolation(shown, ADMIN_PASSWORD_ALLOWED)
    return value


def letsencrypt_needs(domain_value: str | None, email_value: str | None) -> None:
    """Let's Encrypt issues for a DNS name and wants a contact address."""
    if domain_value is None or email_value is None:
        raise RuleViolation("letsencrypt", "letsencrypt only with both a domain and an email set")


def labels(value: Any) -> dict[str, str]:
    """User labels/tags: a map of GCP-valid names to values, none in the kit's namespace."""
    if not isinstance(value, Mapping):
        raise RuleViolation(value, "a map of label names to values")
    if len(value) > MAX_USER_LABELS:
        raise RuleViolation(f"{len(value)} labels", f"at most {MAX_USER_LABELS} labels")
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise RuleViolation({name: item}, LABEL_NAME_ALLOWED)
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise RuleViolation({name: item}, LABEL_VALUE_ALLOWED)
        if not _LABEL_VALUE.match(str(item)):
            raise RuleViolation({name: item}, LABEL_VALUE_ALLOWED)
        if name.startswith(RESERVED_LABEL_PREFIX):
            raise RuleViolation(
                name, f"names not starting with {RESERVED_LABEL_PREFIX} (reserved for the kit)"
            )
        out[name] = str(item)
    return out
