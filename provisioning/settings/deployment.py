"""The Deployment: everything ``fab bootstrap`` needs to know about one server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from provisioning.settings.auth import DEFAULT_OIDC_PLUGIN_VERSION
from provisioning.settings.rules import (
    DEFAULT_ACME_DIRECTORY,
    DEFAULT_MINIFORGE_SHA256,
    DEFAULT_MINIFORGE_URL,
    DEFAULT_MLFLOW_VERSION,
    DEFAULT_PYTHON_VERSION,
    DEFAULT_SERVER_TMP_DIR,
)
from provisioning.settings.secret import REDACTED, Secret
from provisioning.settings.validate import validate


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
    #: The host's SSH public key (``ssh-ed25519 AAAA...``), e.g. the stack's
    #: ``ssh_host_key`` output; pinned, so no other key is accepted.
    ssh_host_key: str | None = None
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
    #: Install the server environment's pip packages from the committed lock for
    #: ``mlflow_version`` (provisioning/locks/), every file checked against its sha256.
    #: false: resolve them at install time (a version without a lock).
    install_from_lock: bool = True
    #: For a host without internet: this machine fetches the Miniforge installer and the
    #: lock's wheels for the host, uploads them, and the host installs with no index
    #: (provisioning/offline.py). Needs install_from_lock, and python_version must be the
    #: installer's own Python.
    offline_install: bool = False
    #: Where this machine keeps what offline_install fetched. Default:
    #: ``$XDG_CACHE_HOME/mlflow-kit/offline`` (``~/.cache/mlflow-kit/offline``).
    offline_cache_dir: str | None = None
    miniforge_url: str = DEFAULT_MINIFORGE_URL
    miniforge_sha256: str = DEFAULT_MINIFORGE_SHA256
    extra_ca_certs: tuple[str, ...] = ()
    tls_mode: str = "self-signed"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    domain: str | None = None
    acme_email: str | None = None
    #: The ACME server certbot asks (Let's Encrypt's production directory by default).
    acme_directory_url: str = DEFAULT_ACME_DIRECTORY
    #: The CA that verifies that server's own HTTPS (for a private or test ACME server).
    acme_ca_cert_file: str | None = None
    #: How the servers check the database: ``verify-full`` (its certificate against the CA
    #: below, and its name) or ``require`` (encrypted, the certificate unchecked).
    db_tls: str = "verify-full"
    #: The CA that signed the database's certificate (a PEM file on this machine).
    db_ca_cert_file: str | None = None
    #: Or where the VM fetches that CA over HTTPS (RDS's regional bundle); with neither,
    #: the VM's own trusted CAs.
    db_ca_url: str | None = None
    #: Or the CA itself, as PEM text (the stack's db_ca_pem output: Cloud SQL's server CA).
    db_ca_pem: str | None = None
    storage_env: dict[str, str] = field(default_factory=dict)
    storage_secret_env: dict[str, Secret] = field(default_factory=dict)
    #: A group of servers behind a load balancer, bootstrapped one at a time (instead of
    #: ``host``; provisioning.settings.group). ``host`` is then the one being worked on.
    hosts: tuple[str, ...] = ()
    #: A ProxyCommand per host of ``hosts`` (``{HOST: COMMAND}``), for a group whose
    #: servers each have their own tunnel (``fab bootstrap --stack`` writes one IAP or
    #: Session Manager command per instance); a host not listed uses ssh_proxy_command.
    host_proxy_commands: dict[str, str] = field(default_factory=dict)
    #: How long a drained host waits before it changes anything: the balancers' unhealthy
    #: detection plus their connection draining (provisioning.settings.group).
    drain_seconds: int = 75
    #: How long after an un-drained host answers /health before the next host is drained:
    #: the balancers' healthy detection.
    healthy_seconds: int = 30
    #: None: sized from the VM at bootstrap time.
    server_instances: int | None = None
    #: Environments kept on the VM: the current one and those a roll back may return to.
    keep_environments: int = 2
    job_execution: bool = False
    #: Proxied downloads streamed from the bucket as they are read, not fetched whole into
    #: the VM's temporary directory first: the servers run the app ``kit-streaming``
    #: (provisioning/artifact_streaming/kit_downloads.py) around basic-auth. Default
    #: (None): on with auth basic and job_execution false, the only case it supports.
    stream_downloads: bool | None = None
    #: The servers' temporary directory (TMPDIR: one subdirectory per instance, emptied when
    #: it starts and when it stops), where proxied downloads not streamed land whole.
    server_tmp_dir: str = DEFAULT_SERVER_TMP_DIR
    #: Preflight refuses a host with less free space (GiB) where server_tmp_dir is.
    server_tmp_min_free_gib: int = 8
    #: MLflow's usage telemetry from the server and the kit's own client (off unless set).
    telemetry: bool = False
    #: Model endpoints (fab serve-model): single-worker scoring processes per endpoint.
    model_workers: int = 1
    #: Memory each model worker process may use (its MemoryMax); sizing counts it in full.
    model_memory_mb: int = 512
    #: Other workers or memory for some models: ``{NAME: {workers: N, memory_mb: M}}``.
    model_endpoints: dict[str, dict[str, int]] = field(default_factory=dict)
    #: How often endpoints served with ``--follow-alias`` re-read their alias.
    model_follow_seconds: int = 60
    #: The database's connection limit (max_connections); None: PostgreSQL's default, 100.
    db_max_connections: int | None = None
    #: None: generated on the VM once and kept there.
    flask_secret_key: Secret | None = None
    #: The passphrase of the KEK under which MLflow encrypts AI Gateway secrets; None:
    #: generated on the VM once and kept there (change it with ``fab rotate-kek``).
    kek_passphrase: Secret | None = None
    db_connection_name: str | None = None
    #: The managed database instance (RDS DB instance identifier, Cloud SQL instance name;
    #: the stack's db_instance_id output): ``fab backup`` uses its own backups.
    db_instance: str | None = None
    #: Where that instance is: its AWS region, or its GCP project.
    db_location: str | None = None
    #: How ``fab backup`` saves the database: ``pg_dump`` (into the bucket, from the VM),
    #: ``managed`` (an RDS snapshot or a Cloud SQL backup run) or ``auto`` (managed when
    #: db_instance is known on aws or gcp, else pg_dump).
    database_backup: str = "auto"
    #: A systemd timer runs ``mlflow gc`` for runs deleted more than gc_older_than ago.
    gc_enabled: bool = True
    #: MLflow's ``--older-than`` format (``#d#h#m#s``).
    gc_older_than: str = "30d"
    #: When the gc timer fires (systemd ``OnCalendar=``).
    gc_schedule: str = "daily"
    #: Addresses that may read /metrics without the admin's credentials.
    metrics_allowed_cidrs: tuple[str, ...] = ()
    #: ``basic`` (MLflow's basic auth) or ``oidc`` (sign-in through an OpenID Connect
    #: provider, with the mlflow-oidc-auth plugin): provisioning.settings.auth.
    auth: str = "basic"
    #: The provider's issuer URL (``https://...``; discovery at ``/.well-known/openid-configuration``).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: Secret | None = None
    #: Members of any of these groups may sign in; of the admin groups, administer.
    oidc_allowed_groups: tuple[str, ...] = ()
    oidc_admin_groups: tuple[str, ...] = ()
    #: The token claim that lists a user's groups.
    oidc_groups_claim: str = "groups"
    oidc_plugin_version: str = DEFAULT_OIDC_PLUGIN_VERSION
    #: Grants the kit converges through MLflow's auth API (provisioning.settings.auth).
    permissions: dict[str, Any] = field(default_factory=dict)
    #: What validation changed on the way in (e.g. a rewritten URI scheme), for display.
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    #: How many servers share the database: 1, or the size of the group this host is one
    #: of. Not a setting (no settings file or override can give it): validation sets it
    #: from ``hosts`` and group_host() carries it to each host's own deployment, whose
    #: database pools are then sized for the whole group (provisioning.sizing).
    group_size: int = field(default=1, repr=False)

    def __post_init__(self) -> None:
        validate(self)

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain data for printing, with secret values replaced."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in INTERNAL_FIELDS:
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


#: Fields validation and the group fill in, never read from settings.
INTERNAL_FIELDS = ("notes", "group_size")
#: Keys a settings file (or the overrides of deployment_from_outputs) may use.
SETTINGS_KEYS = tuple(
    f.name for f in dataclasses.fields(Deployment) if f.name not in INTERNAL_FIELDS
)
REQUIRED_KEYS = tuple(
    f.name
    for f in dataclasses.fields(Deployment)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)
SECRET_FIELDS = frozenset(
    {
        "backend_store_uri",
        "admin_password",
        "flask_secret_key",
        "kek_passphrase",
        "oidc_client_secret",
    }
)
#: Fields whose values are local file paths; a settings file's relative paths are
#: resolved against the settings file's directory.
PATH_FIELDS = frozenset(
    {
        "ssh_key_file",
        "known_hosts_file",
        "tls_cert_file",
        "tls_key_file",
        "extra_ca_certs",
        "db_ca_cert_file",
        "acme_ca_cert_file",
        "offline_cache_dir",
    }
)
