"""Stack settings: the only module that reads ``pulumi.Config``.

Everything is read and validated before the program declares a resource, so
a wrong value fails ``pulumi preview`` with a message naming the key, the value
and what is allowed, and nothing is touched. Cloud-specific settings are parsed
by ``stacks/gcp/settings.py`` and ``stacks/aws/settings.py`` through the
``ConfigReader`` defined here, so they never touch ``pulumi.Config`` themselves.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pulumi

from stacks import contract, keys, naming, rules

if TYPE_CHECKING:
    from stacks.topology import GroupSettings

PROJECT = keys.PROJECT
WORLD_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
TLS_MODES = rules.TLS_MODES
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$"
)


class SettingError(ValueError):
    """A stack setting has a value the kit does not accept."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"stack setting {key!r} has value {value!r}; allowed: {allowed}")


class ConfigReader:
    """Typed access to stack config under one namespace, e.g. ``mlflow-server`` or ``gcp``.

    ``key`` in errors is the fully qualified name a user types in
    ``pulumi config set``, e.g. ``mlflow-server:httpsAllowedCidrs``.
    """

    def __init__(self, namespace: str = PROJECT):
        self.namespace = namespace
        self._config = pulumi.Config(namespace)

    def qualified(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self._config.get(key)
        return default if value is None else value

    def require(self, key: str, allowed: str) -> str:
        value = self._config.get(key)
        if value is None or value == "":
            raise SettingError(self.qualified(key), value, allowed)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._config.get(key)
        if value is None:
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise SettingError(self.qualified(key), value, "true or false")

    def get_int(self, key: str, default: int, low: int, high: int) -> int:
        value = self._config.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise SettingError(self.qualified(key), value, f"a whole number from {low} to {high}")
        return number

    def get_choice(self, key: str, allowed: tuple[str, ...], default: str | None) -> str:
        value = self._config.get(key)
        if value is None and default is not None:
            return default
        if value not in allowed:
            raise SettingError(self.qualified(key), value, "one of " + ", ".join(allowed))
        return value

    def get_object(self, key: str, default: Any) -> Any:
        try:
            value = self._config.get_object(key)
        except Exception as error:  # pulumi raises a plain Exception on bad JSON
            raise SettingError(
                self.qualified(key), self._config.get(key), "valid JSON/YAML"
            ) from error
        return default if value is None else value

    def get_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self.get_object(key, default if default is not None else [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise SettingError(self.qualified(key), value, "a list of strings")
        return value

    def get_secret(self, key: str) -> pulumi.Output[str] | None:
        return self._config.get_secret(key)

    def get_cidrs(
        self, key: str, default: list[str] | None = None, required: bool = False
    ) -> list[str]:
        """A list of CIDRs in canonical form; ``required`` refuses an empty list."""
        cidrs = self.get_list(key, default)
        if required and not cidrs:
            raise SettingError(
                self.qualified(key),
                cidrs,
                'a non-empty list of CIDRs such as ["203.0.113.0/24"] '
                '("0.0.0.0/0" opens the service to the whole internet and must be set explicitly)',
            )
        return [ipv4_cidr(self.qualified(key), item) for item in cidrs]


def cidr(key: str, value: str) -> str:
    """``value`` as a canonical CIDR, or a SettingError naming ``key``."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise SettingError(key, value, f"a CIDR such as 203.0.113.0/24 ({error})") from error
    return str(network)


def ipv4_cidr(key: str, value: str) -> str:
    """``value`` as a canonical IPv4 CIDR: neither cloud's network here has IPv6."""
    canonical = cidr(key, value)
    if ipaddress.ip_network(canonical).version != 4:
        raise SettingError(
            key,
            value,
            "an IPv4 CIDR: the stack's network and VM have no IPv6 address, so an IPv6 "
            "source could never reach them (dual-stack clients connect over IPv4: list "
            "their IPv4 ranges)",
        )
    return canonical


def ssh_key_algorithm(key: str, text: str) -> str:
    """The algorithm of an OpenSSH public key line, checked against its own encoded blob."""
    match = _SSH_KEY.match(text.strip())
    allowed = "OpenSSH public keys (ssh-ed25519, ssh-rsa, ecdsa-sha2-*)"
    if not match:
        raise SettingError(key, text[:40], allowed)
    algorithm, blob = match.group(1), text.split()[1]
    try:
        # The type is encoded again at the start of the key data: the two must agree.
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4))
    except (binascii.Error, ValueError) as error:
        raise SettingError(key, text[:40], allowed + " with base64 key data") from error
    length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else 0
    if raw[4 : 4 + length].decode("ascii", "replace") != algorithm:
        raise SettingError(key, text[:40], allowed + " whose key data matches the key type")
    return algorithm


def stack_config() -> dict[str, Any]:
    """Every config key of the stack (``namespace:name``) with its value, as the engine set it."""
    merged = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    out = {}
    for full, value in merged.items():
        namespace, _, name = full.partition(":")
        out[f"{namespace}:{name.removeprefix('config:')}"] = value
    return out


def secret_keys() -> set[str]:
    """The config keys the stack stores encrypted (``namespace:name``)."""
    return set(pulumi.runtime.config.get_config_secret_keys_env()) | set(
        pulumi.runtime.config._SECRET_KEYS.get()  # noqa: SLF001 - the SDK has no getter
    )


def check_keys(cloud: str) -> None:
    """Refuse keys the program would silently ignore: typos in the project namespace,
    provider keys the stack's explicit provider does not take, the other cloud's keys;
    and keys that must be secret but are stored in plain text."""
    secret = secret_keys()
    for full, value in sorted(stack_config().items()):
        namespace, _, name = full.partition(":")
        shown = "[secret]" if full in secret else value
        if namespace == PROJECT and name not in keys.TYPES:
            raise SettingError(
                full,
                shown,
                "a known mlflow-server key (see Pulumi.yaml)" + keys.nearest(name, keys.TYPES),
            )
        if namespace == PROJECT and name in keys.SECRET and full not in secret:
            raise SettingError(
                full,
                "[stored in plain text]",
                f"a secret: `pulumi config set --secret {full}` with the value on stdin "
                "(`fab rotate-admin-password --stack` does this)",
            )
        if namespace in keys.PROVIDER_KEYS and namespace != cloud:
            raise SettingError(
                full,
                shown,
                f"no {namespace}:* keys in a {cloud} stack (mlflow-server:cloud is {cloud})",
            )
        known = keys.PROVIDER_KEYS.get(namespace, {})
        if namespace == cloud and name not in known:
            raise SettingError(
                full,
                shown,
                f"one of the {namespace} provider keys the stack passes to its provider: "
                + ", ".join(known)
                + keys.nearest(name, known),
            )


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """Settings whose meaning is the same on both clouds."""

    cloud: str
    environment: str
    stack: str
    mlflow_version: str
    https_allowed_cidrs: list[str]
    ssh_allowed_cidrs: list[str]
    ssh_public_keys: list[str]
    ssh_user: str
    tls_mode: str
    domain: str | None
    acme_email: str | None
    labels: dict[str, str]
    expires_at: str | None
    #: The world-open CIDRs that were set explicitly, for a loud warning.
    world_open: list[str] = field(default_factory=list)
    #: The operator's MLflow admin password (``adminPassword``), a secret; None: the
    #: stack's generated one.
    admin_password: pulumi.Output[str] | None = field(default=None, repr=False)
    #: ``single`` (one VM, today's stack) or ``group`` (rules.TOPOLOGIES).
    topology: str = "single"
    #: The group's settings; None with ``topology: single``.
    group: GroupSettings | None = None

    @property
    def is_group(self) -> bool:
        return self.topology == "group"

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def is_test(self) -> bool:
        return self.environment == "test"

    def resource_labels(self) -> dict[str, str]:
        """User labels plus the kit's own stack/environment/expiry labels."""
        labels = dict(self.labels)
        labels[contract.LABEL_STACK] = naming.stack_label(self.stack)
        labels[contract.LABEL_ENVIRONMENT] = self.environment
        if self.expires_at:
            labels[contract.LABEL_EXPIRES] = self.expires_at
        return labels


def now() -> datetime:
    return datetime.now(UTC)


def ruled(reader: ConfigReader, key: str, check, value):
    """``check(value)`` (a stacks/rules.py rule), its violation named by ``key``."""
    try:
        return check(value)
    except rules.RuleViolation as error:
        raise SettingError(reader.qualified(key), error.value, error.allowed) from error


def read_common(reader: ConfigReader, stack: str) -> CommonSettings:
    """Read and validate the settings both clouds share."""
    cloud = reader.get_choice("cloud", contract.CLOUDS, None)
    environment = reader.get_choice("environment", contract.ENVIRONMENTS, None)
    check_keys(cloud)
    mlflow_version = ruled(
        reader,
        "mlflowVersion",
        rules.mlflow_version,
        reader.get("mlflowVersion", contract.DEFAULT_MLFLOW_VERSION),
    )
    https = reader.get_cidrs("httpsAllowedCidrs", required=True)
    ssh = reader.get_cidrs("sshAllowedCidrs", [])
    public_keys = reader.get_list("sshPublicKeys", [])
    for key in public_keys:
        ssh_key_algorithm(reader.qualified("sshPublicKeys"), key)
    ssh_user = ruled(reader, "sshUser", rules.login_user, reader.get("sshUser", "mlflow-admin"))
    tls_mode = ruled(reader, "tlsMode", rules.tls_mode, reader.get("tlsMode", "self-signed"))
    domain = reader.get("domain")
    if domain is not None:
        ruled(reader, "domain", rules.domain, domain)
    acme_email = reader.get("acmeEmail")
    if acme_email is not None:
        ruled(reader, "acmeEmail", rules.email, acme_email)
    if tls_mode == "letsencrypt":
        ruled(reader, "tlsMode", lambda _: rules.letsencrypt_needs(domain, acme_email), tls_mode)
    labels = ruled(reader, "labels", rules.labels, reader.get_object("labels", {}))
    expires_at = reader.get("expiresAt")
    if expires_at is not None:
        try:
            expiry = datetime.strptime(expires_at, contract.EXPIRES_FORMAT).replace(tzinfo=UTC)
        except ValueError as error:
            raise SettingError(
                reader.qualified("expiresAt"), expires_at, "a UTC time as YYYYMMDDhhmm"
            ) from error
        if expiry <= now():
            raise SettingError(
                reader.qualified("expiresAt"),
                expires_at,
                "a UTC time as YYYYMMDDhhmm in the future: this stack has expired; "
                "`fab teardown` removes it, or set a later expiresAt to keep it",
            )
    if environment == "test" and expires_at is None:
        raise SettingError(
            reader.qualified("expiresAt"),
            None,
            "a UTC time as YYYYMMDDhhmm: test stacks must expire (fab test-stack sets it)",
        )
    world = [c for c in https + ssh if c in WORLD_CIDRS]
    admin_password = reader.get("adminPassword")
    if admin_password is not None:
        ruled(reader, "adminPassword", rules.admin_password, admin_password)
    topology = ruled(reader, "topology", rules.topology, reader.get("topology", "single"))
    # Imported here: stacks.topology reads through this module's reader and rules.
    from stacks.topology import read_group

    group = read_group(reader, topology, domain=domain, tls_mode=tls_mode, ssh_cidrs=ssh)
    return CommonSettings(
        cloud=cloud,
        environment=environment,
        stack=stack,
        mlflow_version=mlflow_version,
        https_allowed_cidrs=https,
        ssh_allowed_cidrs=ssh,
        ssh_public_keys=[k.strip() for k in public_keys],
        ssh_user=ssh_user,
        tls_mode=tls_mode,
        domain=domain,
        acme_email=acme_email,
        labels=labels,
        expires_at=expires_at,
        world_open=world,
        admin_password=None if admin_password is None else pulumi.Output.secret(admin_password),
        topology=topology,
        group=group,
    )
