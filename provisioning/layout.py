"""Where everything lives on the VM, and which service each managed file feeds.

``PATHS`` is the layout; steps and templates import it rather than spelling
paths themselves. ``FILES`` maps each template to its destination and to the
handler its change notifies (restart or reload of a service, or none): the
plays derive every restart, reload and daemon-reload from this one table
(:mod:`provisioning.handlers`).
"""

from __future__ import annotations

from dataclasses import dataclass

PATHS = {
    "conda_root": "/opt/miniforge",
    "conda_bin": "/opt/miniforge/bin/conda",
    # Miniforge's own Python: offline_install builds the server's venv from it.
    "conda_python": "/opt/miniforge/bin/python",
    "mlflow_root": "/opt/mlflow",
    "envs_dir": "/opt/mlflow/envs",
    # Symlink to the environment the servers run from.
    "current_env": "/opt/mlflow/current",
    # Symlink to the environment being installed; mlflow-migrate.service runs the
    # schema migration with this one before current is switched to it.
    "next_env": "/opt/mlflow/next",
    "bin_dir": "/opt/mlflow/bin",
    "migrate_script": "/opt/mlflow/bin/mlflow-migrate",
    "config_dir": "/etc/mlflow",  # root:mlflow 0750
    "environment_yml": "/etc/mlflow/environment.yml",  # root:root 0644
    # The kit's own wheels, which environment.yml names (provisioning.artifact_streaming).
    "kit_wheels_dir": "/opt/mlflow/wheels",
    # The pip locks environment.yml installs, by sha256 (provisioning.lock).
    "locks_dir": "/opt/mlflow/locks",
    # offline_install: the lock's wheels for this host, one directory per lock
    # (provisioning.offline), and the Miniforge installer uploaded for its one run.
    "wheelhouse_dir": "/opt/mlflow/wheelhouse",
    "miniforge_upload": "/opt/mlflow/miniforge-installer.sh",
    # offline_install: environment.yml's pip section as the file pip installs.
    "environment_requirements": "/etc/mlflow/environment.requirements.txt",
    "env_file": "/etc/mlflow/mlflow.env",  # mlflow:mlflow 0600
    "auth_config": "/etc/mlflow/basic_auth.ini",  # mlflow:mlflow 0600
    "db_ca": "/etc/mlflow/db-ca.pem",  # root:root 0644
    "flask_key": "/etc/mlflow/flask-secret-key",  # mlflow:mlflow 0600
    # "VERSION PASSPHRASE" of the KEK that wraps MLflow's gateway secrets; mlflow:mlflow 0600
    "kek": "/etc/mlflow/kek",
    # A rotation the next migration carries out (templates/mlflow-migrate.py); mlflow 0600
    "kek_request": "/var/lib/mlflow/kek-rotation.json",
    "tls_dir": "/etc/mlflow/tls",
    "tls_cert": "/etc/mlflow/tls/server.crt",
    "tls_key": "/etc/mlflow/tls/server.key",
    "state_dir": "/var/lib/mlflow",  # the mlflow user's home
    # The environments activated, most recent last (what a roll back and the pruning keep).
    "env_history": "/var/lib/mlflow/environments",
    "systemd_dir": "/etc/systemd/system",
    "server_unit": "/etc/systemd/system/mlflow-server@.service",
    "migrate_unit": "/etc/systemd/system/mlflow-migrate.service",
    "nginx_site": "/etc/nginx/sites-available/mlflow.conf",
    "nginx_upstream": "/etc/nginx/mlflow-upstream.conf",
    "nginx_site_enabled": "/etc/nginx/sites-enabled/mlflow.conf",
    "nginx_default_site": "/etc/nginx/sites-enabled/default",
    # While this file exists, /health answers 503 to everyone but loopback, so a load
    # balancer takes the host out while the API and UI keep serving (fab bootstrap's
    # rolling drain). Under /etc/nginx: nginx's workers must be able to see it, and a
    # drained host stays drained across a reboot.
    "drain_flag": "/etc/nginx/mlflow-draining",
    "letsencrypt_live": "/etc/letsencrypt/live",
    "acme_webroot": "/var/www/letsencrypt",
    "certbot_deploy_hook": "/etc/letsencrypt/renewal-hooks/deploy/mlflow-nginx-reload",
    "certbot_dropin": "/etc/systemd/system/certbot.service.d/mlflow-kit.conf",
    "acme_ca": "/etc/mlflow/acme-ca.pem",
    "system_ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
    "local_ca_dir": "/usr/local/share/ca-certificates",
    "kit_ca_dir": "/usr/local/share/ca-certificates/mlflow-kit",
    "pip_conf": "/etc/pip.conf",
    # auth oidc: the access token of the kit's own admin service account (mlflow 0600).
    "oidc_admin_token": "/var/lib/mlflow/kit-admin-token",
    # The grants fab bootstrap created (and so may remove); mlflow 0600.
    "permissions_record": "/var/lib/mlflow/kit-permissions.json",
    # Model endpoints (fab serve-model): what the operator asked for; root 0644, no secret.
    "models_desired": "/etc/mlflow/models.json",
    # Each served model version, downloaded once: <models_dir>/<name>/<version>.
    "models_dir": "/opt/mlflow/models",
    # Model environments, one per requirement set: <model_envs_dir>/<hash>/env.
    "model_envs_dir": "/opt/mlflow/model-envs",
    # Converges the endpoints to models_desired (run by mlflow-models.service).
    "models_program": "/opt/mlflow/bin/mlflow-models",
    # Its modules, beside it: it imports them by their plain names.
    "models_files_module": "/opt/mlflow/bin/kit_models_files.py",
    "models_host_module": "/opt/mlflow/bin/kit_models_host.py",
    "model_unit": "/etc/systemd/system/mlflow-model@.service",
    "models_unit": "/etc/systemd/system/mlflow-models.service",
    "models_timer": "/etc/systemd/system/mlflow-models.timer",
    # Each endpoint's nginx upstream and locations, included by the site.
    "nginx_models_dir": "/etc/nginx/mlflow-models",
    "nginx_log_dir": "/var/log/nginx",
    # Backups, garbage collection and metrics (provisioning/backups/remote: the programs).
    "kit_storage": "/opt/mlflow/bin/kit_storage.py",
    # On the server instances' PYTHONPATH: their sitecustomize (templates/kit_server_site.py).
    "server_site_dir": "/opt/mlflow/lib/server-site",
    "server_sitecustomize": "/opt/mlflow/lib/server-site/sitecustomize.py",
    "backup_program": "/opt/mlflow/bin/mlflow-backup",
    "gc_program": "/opt/mlflow/bin/mlflow-gc",
    "metrics_program": "/opt/mlflow/bin/mlflow-metrics",
    "gc_unit": "/etc/systemd/system/mlflow-gc.service",
    "gc_timer": "/etc/systemd/system/mlflow-gc.timer",
    # What the last gc run did (JSON, written by mlflow-gc); fab status shows it.
    "gc_last": "/var/lib/mlflow/gc-last.json",
    "metrics_unit": "/etc/systemd/system/mlflow-metrics.service",
}
USER = "mlflow"
GROUP = "mlflow"
SERVER_UNIT_NAME = "mlflow-server@.service"
MIGRATE_UNIT_NAME = "mlflow-migrate.service"
NGINX_UNIT_NAME = "nginx.service"
#: Services the kit does not render but starts or reloads (installed by the packages step).
SYSTEM_SERVICES = (NGINX_UNIT_NAME,)
FIRST_SERVER_PORT = 5001
#: The loopback ports of model endpoint instances (mlflow-model@<name>-<port>).
MODEL_PORTS = (5201, 5899)
GC_UNIT_NAME = "mlflow-gc.service"
GC_TIMER_NAME = "mlflow-gc.timer"
METRICS_UNIT_NAME = "mlflow-metrics.service"
#: Loopback port of mlflow-metrics (every instance's metrics and the kit's counts in one).
METRICS_PORT = 5200


@dataclass(frozen=True)
class Handler:
    """What a change means for a service: ``restart`` or ``reload`` it."""

    action: str
    service: str

    def __post_init__(self) -> None:
        if self.action not in ("restart", "reload"):
            raise ValueError(f"handler action {self.action!r}: allowed restart, reload")


RESTART_SERVERS = Handler("restart", SERVER_UNIT_NAME)
RELOAD_NGINX = Handler("reload", NGINX_UNIT_NAME)


@dataclass(frozen=True)
class ManagedFile:
    path: str
    owner: str
    group: str
    mode: int
    #: The handler a change of this file notifies; None when nothing reads it while running.
    notifies: Handler | None = None

    @property
    def is_unit(self) -> bool:
        """A systemd unit file: a change needs ``systemctl daemon-reload``."""
        return self.path.startswith(PATHS["systemd_dir"] + "/")


#: Template name -> where it goes and what its change notifies.
FILES = {
    # Its hash names the environment directory; switching environments notifies instead.
    "environment.yml.j2": ManagedFile(PATHS["environment_yml"], "root", "root", 0o644),
    "mlflow.env.j2": ManagedFile(PATHS["env_file"], USER, GROUP, 0o600, RESTART_SERVERS),
    "basic_auth.ini.j2": ManagedFile(PATHS["auth_config"], USER, GROUP, 0o600, RESTART_SERVERS),
    "mlflow-server@.service.j2": ManagedFile(
        PATHS["server_unit"], "root", "root", 0o644, RESTART_SERVERS
    ),
    "kit_server_site.py": ManagedFile(
        PATHS["server_sitecustomize"], "root", "root", 0o644, RESTART_SERVERS
    ),
    # Run by the migration step itself, never by a running service.
    "mlflow-migrate.service.j2": ManagedFile(PATHS["migrate_unit"], "root", "root", 0o644),
    "mlflow-migrate.py": ManagedFile(PATHS["migrate_script"], "root", "root", 0o755),
    "nginx-mlflow.conf.j2": ManagedFile(PATHS["nginx_site"], "root", "root", 0o644, RELOAD_NGINX),
    "nginx-upstream.conf.j2": ManagedFile(
        PATHS["nginx_upstream"], "root", "root", 0o644, RELOAD_NGINX
    ),
    # Before the first certificate: port 80 only (the ACME challenge); the full site replaces it.
    "nginx-acme.conf.j2": ManagedFile(PATHS["nginx_site"], "root", "root", 0o644, RELOAD_NGINX),
    # certbot's renewals trust a private ACME server's CA; read when certbot.service starts.
    "certbot-env.conf.j2": ManagedFile(PATHS["certbot_dropin"], "root", "root", 0o644),
    # Run by certbot after a renewal; it reloads nginx itself.
    "certbot-deploy-hook.sh.j2": ManagedFile(PATHS["certbot_deploy_hook"], "root", "root", 0o755),
    # Model endpoints. The program compares each instance's unit file digest with the one
    # it was started with and replaces stale instances blue/green: no handler restarts them.
    "kit_models_files.py": ManagedFile(PATHS["models_files_module"], "root", "root", 0o644),
    "kit_models_host.py": ManagedFile(PATHS["models_host_module"], "root", "root", 0o644),
    "mlflow-models.py": ManagedFile(PATHS["models_program"], "root", "root", 0o755),
    "mlflow-model@.service.j2": ManagedFile(PATHS["model_unit"], "root", "root", 0o644),
    "mlflow-models.service.j2": ManagedFile(PATHS["models_unit"], "root", "root", 0o644),
    "mlflow-models.timer.j2": ManagedFile(
        PATHS["models_timer"], "root", "root", 0o644, Handler("restart", "mlflow-models.timer")
    ),
    # Started by their timer; a change applies at the next run (the gc step reloads units).
    "mlflow-gc.service.j2": ManagedFile(PATHS["gc_unit"], "root", "root", 0o644),
    "mlflow-gc.timer.j2": ManagedFile(PATHS["gc_timer"], "root", "root", 0o644),
    "mlflow-metrics.service.j2": ManagedFile(
        PATHS["metrics_unit"], "root", "root", 0o644, Handler("restart", METRICS_UNIT_NAME)
    ),
}

#: Managed state that is not a rendered file, and what its change notifies.
TLS_CERTIFICATE = "tls certificate"
#: (The environment the servers run is compared with each instance's process instead:
#: provisioning.steps.servers.)
OTHER_STATE = {TLS_CERTIFICATE: RELOAD_NGINX}

#: What the configuration step installs: the servers' and the migration's files.
SERVER_FILES = (
    "mlflow.env.j2",
    "basic_auth.ini.j2",
    "mlflow-migrate.py",
    "mlflow-server@.service.j2",
    "kit_server_site.py",
    "mlflow-migrate.service.j2",
)
