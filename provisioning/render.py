"""Render the files ``fab bootstrap`` writes onto the VM, from ``templates/``.

``context()`` is the only place secrets are revealed: what it returns goes
straight into ``render()`` and onto the VM. Where each file goes is
:mod:`provisioning.layout`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2

from provisioning import artifact_streaming, lock, sizing
from provisioning.auth import AUTH_CACHE_TTL_SECONDS, auth_context
from provisioning.handlers import inputs_of
from provisioning.layout import (
    GROUP,
    METRICS_PORT,
    MIGRATE_UNIT_NAME,
    MODEL_PORTS,
    PATHS,
    SERVER_UNIT_NAME,
    USER,
)
from provisioning.settings import Deployment
from stacks.ingress import BACKEND_KEEPALIVE_SECONDS

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


class RenderError(Exception):
    """A template could not be rendered; the message names template, line and cause."""

    def __init__(self, template: str, line: int | None, detail: str, source: str | None = None):
        #: ``source`` is the template the line is in, when an included one.
        self.template, self.line, self.detail = template, line, detail
        self.source = source or template
        where = template if self.source == template else f"{template} (in {self.source})"
        if line:
            where += f", line {line}"
        super().__init__(f"cannot render {where}: {detail}")


# --------------------------------------------------------------------------- escaping


def systemd_env_quote(value: str) -> str:
    """Quote ``value`` for a systemd ``EnvironmentFile=`` line (systemd >= 239).

    Inside double quotes systemd unescapes exactly ``\\ " $ ` `` and keeps any other
    backslash, as a POSIX shell does; it expands neither ``$VAR`` nor ``%``
    specifiers in an environment file. The same text is therefore also correct
    when a shell sources the file.
    """
    if any(ch in value for ch in "\n\r\0"):
        raise ValueError("environment values must be a single line without NUL")
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def ini_value(value: str) -> str:
    """Escape ``value`` for configparser's default BasicInterpolation (``%`` -> ``%%``)."""
    if any(ch in value for ch in "\n\r\0"):
        raise ValueError("ini values must be a single line")
    if value != value.strip():
        raise ValueError("ini values cannot keep leading or trailing whitespace")
    return value.replace("%", "%%")


def systemd_arg(value: str) -> str:
    """One ``ExecStart=`` argument, double-quoted, with ``%`` and ``$`` made literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


# --------------------------------------------------------------------------- rendering


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["systemd_env_quote"] = systemd_env_quote
    env.filters["ini_value"] = ini_value
    env.filters["systemd_arg"] = systemd_arg
    return env


_ENV = _environment()


def template_names() -> list[str]:
    """Every template file in templates/."""
    return sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_file())


def render(name: str, context: dict[str, Any]) -> str:
    """Render ``templates/<name>`` with ``context``; raise RenderError naming the problem."""
    try:
        template = _ENV.get_template(name)
    except jinja2.TemplateNotFound:
        raise RenderError(name, None, f"no such template in {TEMPLATES_DIR}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(name, exc.lineno, f"syntax error: {exc.message}") from None
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        source, line = _template_position(exc)
        raise RenderError(name, line, _undefined_detail(exc), source) from None
    except (ValueError, TypeError) as exc:
        source, line = _template_position(exc)
        raise RenderError(name, line, str(exc), source) from None


def _template_position(exc: BaseException) -> tuple[str | None, int | None]:
    """Innermost template and line the exception came from.

    Jinja rewrites the traceback of a render error so that its frames carry the
    template's file name and line number, so the last such frame is the answer.
    """
    source = line = None
    tb = exc.__traceback__
    while tb is not None:
        path = Path(tb.tb_frame.f_code.co_filename)
        if path.parent == TEMPLATES_DIR:
            source, line = path.name, tb.tb_lineno
        tb = tb.tb_next
    return source, line


def _undefined_detail(exc: jinja2.UndefinedError) -> str:
    message = str(exc.message or exc)
    match = re.match(r"'([^']+)' is undefined", message)
    if match:
        return f"undefined variable {match.group(1)!r}"
    match = re.match(r"'.+' has no attribute '([^']+)'", message)
    if match:
        return f"undefined variable attribute {match.group(1)!r} ({message})"
    return message


# --------------------------------------------------------------------------- context


def _lock_plugin(deployment: Deployment) -> str | None:
    """The mlflow-oidc-auth version the server environment's packages include, if any."""
    return deployment.oidc_plugin_version if deployment.auth == "oidc" else None


def server_lock(deployment: Deployment) -> lock.Lock | None:
    """The committed lock the server environment installs, or None (install_from_lock false)."""
    if not deployment.install_from_lock:
        return None
    found = lock.find(deployment.mlflow_version, _lock_plugin(deployment))
    if found is None:  # settings validation refuses this first
        raise RenderError("environment.yml.j2", None, f"no lock for {deployment.mlflow_version}")
    return found


def packages_context(deployment: Deployment) -> dict[str, Any]:
    """environment.yml's pip part: the lock by its path on the host (its sha256 in the name)
    and the kit's wheel with its sha256, or, unlocked, the same requirements unpinned."""
    wheel = artifact_streaming.wheel()
    wheel_path = f"{PATHS['kit_wheels_dir']}/{wheel.filename}"
    found = server_lock(deployment)
    if found is None:
        top = lock.requirements(deployment.mlflow_version, _lock_plugin(deployment))
        return {
            "pip_lock": None,
            "pip_requirements": [*top, wheel_path],
            "pip_wheelhouse": None,
            "offline_python": None,
        }
    digest = hashlib.sha256(wheel.data).hexdigest()
    return {
        "pip_lock": f"{PATHS['locks_dir']}/{found.host_name}",
        "pip_requirements": [
            f"{artifact_streaming.DISTRIBUTION} @ file://{wheel_path} --hash=sha256:{digest}"
        ],
        "pip_wheelhouse": wheelhouse_path(found) if deployment.offline_install else None,
        "offline_python": (
            f"Miniforge's own Python (installer sha256 {deployment.miniforge_sha256})"
            if deployment.offline_install
            else None
        ),
    }


def wheelhouse_path(found: lock.Lock) -> str:
    """offline_install: where the host keeps this lock's wheels (provisioning.offline)."""
    return f"{PATHS['wheelhouse_dir']}/{found.host_name.removesuffix('.txt')}"


def pip_section(ctx: dict[str, Any]) -> list[str]:
    """environment.yml's pip lines, as the file pip installs them from (conda writes the
    same file from them; an offline build writes it itself)."""
    index = ["--no-index", f"--find-links {ctx['pip_wheelhouse']}"] if ctx["pip_wheelhouse"] else []
    locked = ["--require-hashes", f"-r {ctx['pip_lock']}"] if ctx["pip_lock"] else []
    return [*index, *locked, *ctx["pip_requirements"]]


def env_hash(environment_yml: str) -> str:
    """Name of the conda env directory for this environment.yml content."""
    return hashlib.sha256(environment_yml.encode()).hexdigest()[:16]


def env_dir(environment_yml: str) -> str:
    """``/opt/mlflow/envs/<hash>`` for this environment.yml content."""
    return f"{PATHS['envs_dir']}/{env_hash(environment_yml)}"


def db_ca_path(deployment: Deployment) -> str:
    """The CA file the servers check the database's certificate against."""
    if deployment.db_ca_cert_file or deployment.db_ca_url or deployment.db_ca_pem:
        return PATHS["db_ca"]
    return PATHS["system_ca_bundle"]


def server_backend_uri(deployment: Deployment) -> str:
    """The backend URI the servers use: the database's certificate and name verified
    (``sslmode=verify-full``) unless ``db_tls`` is ``require``."""
    base, _, query = deployment.backend_store_uri.reveal().partition("?")
    params = [
        (k, v)
        for k, v in parse_qsl(query, keep_blank_values=True)
        if k not in ("sslmode", "sslrootcert")
    ]
    if deployment.db_tls == "require":
        params.append(("sslmode", "require"))
    else:
        params += [("sslmode", "verify-full"), ("sslrootcert", db_ca_path(deployment))]
    return f"{base}?{urlencode(params, safe='/')}"


def tls_paths(deployment: Deployment) -> tuple[str, str]:
    """Certificate and key paths nginx reads for this deployment's TLS mode."""
    if deployment.tls_mode == "letsencrypt":
        live = f"{PATHS['letsencrypt_live']}/{deployment.domain}"
        return f"{live}/fullchain.pem", f"{live}/privkey.pem"
    return PATHS["tls_cert"], PATHS["tls_key"]


def server_names(deployment: Deployment) -> list[str]:
    """Names nginx answers to: the public host, the tracking URL's host, the ACME domain."""
    names = [deployment.public_host, urlsplit(deployment.tracking_url).hostname or ""]
    if deployment.domain and deployment.tls_mode == "letsencrypt":
        names.append(deployment.domain)
    return [n for n in dict.fromkeys(names) if n]


def allowed_hosts(deployment: Deployment) -> list[str]:
    """Host header values the server accepts: the public names, with and without port."""
    hosts: list[str] = []
    for name in server_names(deployment):
        host = f"[{name}]" if ":" in name else name
        hosts += [host, f"{host}:443"]
    tracking = urlsplit(deployment.tracking_url)
    if tracking.port is not None:
        hosts.append(tracking.netloc)
    # nginx's health checks and operators on the VM itself.
    hosts += ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]
    return list(dict.fromkeys(hosts))


def context(
    deployment: Deployment,
    *,
    server_ports: list[int],
    flask_secret_key: str,
    job_execution: bool,
    kek_passphrase: str,
    kek_version: int = 1,
) -> dict[str, Any]:
    """Every variable the templates use, for one deployment.

    ``server_ports`` are the loopback ports of the ``mlflow-server@<port>`` instances;
    ``flask_secret_key`` is the key kept on the VM (or ``deployment.flask_secret_key``);
    ``job_execution`` is whether this VM runs MLflow's job runner.
    """
    if not server_ports:
        raise ValueError("server_ports must name at least one port")
    for port in server_ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            raise ValueError(f"server port {port!r} is not an integer from 1024 to 65535")
    if len(set(server_ports)) != len(server_ports):
        raise ValueError(f"server ports {server_ports!r} repeat a port")
    tls_cert, tls_key = tls_paths(deployment)
    max_connections = deployment.db_max_connections or sizing.DEFAULT_DB_MAX_CONNECTIONS
    pool = sizing.pool_for(max_connections, len(server_ports), job_execution, deployment.group_size)
    ctx = {
        "paths": dict(PATHS),
        "server_unit_name": SERVER_UNIT_NAME,
        "migrate_unit_name": MIGRATE_UNIT_NAME,
        "user": USER,
        "group": GROUP,
        "cloud": deployment.cloud,
        "environment": deployment.environment,
        "public_host": deployment.public_host,
        "tracking_url": deployment.tracking_url,
        "server_names": server_names(deployment),
        "allowed_hosts": allowed_hosts(deployment),
        "cors_allowed_origins": [deployment.tracking_url],
        "server_ports": list(server_ports),
        "auth_cache_ttl_seconds": AUTH_CACHE_TTL_SECONDS,
        # How many servers share the database and the load balancer (1: no group).
        "group_size": deployment.group_size,
        # A group's nginx is reached only by the cloud's load balancer, which reuses idle
        # connections: nginx keeps them longer than it does (stacks/ingress.py).
        "balancer_keepalive_seconds": (
            BACKEND_KEEPALIVE_SECONDS if deployment.group_size > 1 else None
        ),
        "python_version": deployment.python_version,
        "mlflow_version": deployment.mlflow_version,
        **packages_context(deployment),
        "artifact_mode": deployment.artifact_mode,
        "artifacts_destination": deployment.artifacts_destination,
        "backend_store_uri": server_backend_uri(deployment),
        "admin_username": deployment.admin_username,
        "admin_password": deployment.admin_password.reveal(),
        "flask_secret_key": flask_secret_key,
        "kek_passphrase": kek_passphrase,
        "kek_version": int(kek_version),
        "job_execution": bool(job_execution),
        "telemetry": deployment.telemetry,
        "storage_env": dict(sorted(deployment.storage_env.items())),
        "storage_secret_env": {
            k: v.reveal() for k, v in sorted(deployment.storage_secret_env.items())
        },
        "ca_bundle": PATHS["system_ca_bundle"] if deployment.extra_ca_certs else None,
        "tls_mode": deployment.tls_mode,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "domain": deployment.domain,
        "acme_email": deployment.acme_email,
        "acme_directory_url": deployment.acme_directory_url,
        "db_max_connections": max_connections,
        "db_pool_size": pool.size,
        "db_max_overflow": pool.max_overflow,
        "wsgi_threads": pool.wsgi_threads,
        "instance_memory_high_mb": sizing.INSTANCE_MEMORY_HIGH_MB,
        "instance_memory_max_mb": sizing.INSTANCE_MEMORY_MAX_MB,
        "server_tmp_dir": deployment.server_tmp_dir,
        # Garbage collection (mlflow-gc.timer) and metrics (mlflow-metrics, /metrics).
        "gc_older_than": deployment.gc_older_than,
        "gc_schedule": deployment.gc_schedule,
        "metrics_port": METRICS_PORT,
        "metrics_allowed_cidrs": list(deployment.metrics_allowed_cidrs),
        # Instances a rolling restart has taken out of nginx's upstream for now.
        "down_ports": [],
        "config_digest": "",
        **model_context(deployment),
    }
    ctx.update(auth_context(deployment, ctx["backend_store_uri"]))
    ctx["config_digest"] = config_digest(ctx)
    return ctx


def model_context(deployment: Deployment) -> dict[str, Any]:
    """What the model endpoint templates use (part of context(), and enough on its own:
    serving a model needs none of the server's secrets)."""
    return {
        "paths": dict(PATHS),
        "user": USER,
        "group": GROUP,
        "telemetry": deployment.telemetry,
        "model_follow_seconds": deployment.model_follow_seconds,
        "model_ports": list(MODEL_PORTS),
    }


def config_digest(ctx: dict[str, Any]) -> str:
    """Everything the server instances read at start, as one digest.

    The env file carries it (MLFLOW_KIT_CONFIG), so each running instance's
    environment records what it was started with; a later bootstrap restarts
    exactly the instances whose record differs, even after an interrupted run.
    """
    blank = {**ctx, "config_digest": ""}
    digest = hashlib.sha256()
    for name in inputs_of(SERVER_UNIT_NAME):
        digest.update(render(name, blank).encode())
    return digest.hexdigest()[:16]
