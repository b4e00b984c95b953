"""The plays: each one short ordering function over the steps, read top to bottom."""

from __future__ import annotations

import dataclasses

from provisioning import facts
from provisioning.artifact_streaming import kit_auth
from provisioning.auth import AUTH_CACHE_TTL_SECONDS
from provisioning.backups.record import BackupRecord
from provisioning.layout import PATHS, SERVER_FILES
from provisioning.play import Play
from provisioning.render import context, model_context, render
from provisioning.settings import Deployment, Secret
from provisioning.steps import (
    admin,
    conda,
    configuration,
    database,
    gc,
    health,
    metrics,
    models,
    oidc,
    packages,
    permissions,
    preflight,
    proxy,
    schema,
    secrets,
    servers,
)
from provisioning.steps import backup as backup_steps
from provisioning.transport import Host, RemoteError


def bootstrap(play: Play, d: Deployment, selection: str = "") -> None:
    """Converge the host to ``d``: a TLS, authenticated MLflow server, proven by the health gate.

    The new environment is migrated before the servers switch to it, so a failed
    migration leaves the old server running; a migration is preceded by a backup,
    and a switch that fails rolls back to the previous environment, naming the
    command that restores that backup (``selection``: the task's --stack/--settings).
    Each instance restarts, one at a time, when what it was started with differs
    from what it should run; nginx reloads for what changed (provisioning.handlers).
    """
    resources = play.step("preflight", preflight.check, d)
    ports = servers.ports_for(d, resources)
    if d.auth == "basic":
        play.step("admin password", admin.check_password, d)
    play.step("first boot", packages.first_boot)
    play.step("ca certificates", packages.trust_ca_certs, d.extra_ca_certs)
    play.step("system packages", packages.system_packages)
    if d.auth == "oidc":
        # From the VM, before anything the servers read changes (provisioning.steps.oidc).
        play.step("identity provider", oidc.check_provider, d)
    play.step("backup tools", backup_steps.tools)
    play.step("database certificate", database.certificate, d)
    play.step("mlflow user and directories", configuration.service_user, d)
    play.step("miniforge", conda.miniforge, d)
    keys = play.step("server secrets", secrets.server_secrets, d)
    ctx = context(
        d,
        server_ports=ports,
        flask_secret_key=keys.flask_key,
        job_execution=d.job_execution,
        kek_passphrase=keys.kek_passphrase,
        kek_version=keys.kek_version,
    )
    play.step("kit wheel", conda.kit_wheel)
    play.step("package lock", conda.package_lock, d)
    play.step("wheelhouse", conda.wheelhouse, d)
    env = play.step("conda environment", conda.environment, render("environment.yml.j2", ctx), d)
    plan = play.step("schema check", schema.check, d, env)
    play.step("configuration files", configuration.install, ctx, SERVER_FILES)
    restore = ""
    if plan.migrates and not plan.empty:
        taken = play.step("backup before migration", backup_steps.before_migration, d, selection)
        restore = taken.restore_command if taken else ""
    play.step("schema migration", schema.migrate, d, plan)
    if d.auth == "oidc":
        # The plugin's schema, the kit's admin account and its token (kept on the VM, where
        # the health gate, permissions, gc and metrics read it).
        play.step("oidc accounts", oidc.admin_account, d, env)
    previous = play.step("activate environment", conda.activate, env)
    try:
        play.step("mlflow servers", servers.converge, ctx, env)
        changed = play.step("tls certificate", proxy.certificate, d, ctx)
        play.step("nginx", proxy.nginx, ctx, proxy.site_files(d), changed)
        play.step("health gate", health.gate, d)
    except RemoteError:
        if previous is not None:
            play.step("roll back", servers.roll_back, ctx, previous, restore, env)
        raise
    # Also with no grants set: those the kit made before and the settings dropped go.
    play.step("permissions", permissions.converge, d)
    play.step("garbage collection", gc.converge, d, ctx)
    play.step("metrics", metrics.converge, ctx)
    play.step("old environments", conda.prune, d.keep_environments)


def rotate_kek(play: Play, d: Deployment) -> None:
    """A new KEK for MLflow's gateway secrets (MLflow's rotation, with the servers stopped),
    then the bootstrap that hands it to the servers and proves them."""
    play.step("preflight", preflight.check, d)
    play.step("rotate KEK", secrets.rotate_kek)
    bootstrap(play, d)


def rotate_admin_password(play: Play, d: Deployment, current: Secret, new: Secret) -> None:
    """The admin's password changed through MLflow's API, then the bootstrap that gives the
    servers the new one (MLFLOW_AUTH_ADMIN_PASSWORD) and proves it."""
    play.step("preflight", preflight.check, d)
    play.step("admin password", admin.change_password, d, current, new)
    bootstrap(play, dataclasses.replace(d, admin_password=new))


def restart(play: Play, d: Deployment) -> None:
    """Restart every server instance, then prove the server works."""
    play.step("restart", servers.restart_all, d.group_size > 1)
    play.step("health gate", health.gate, d)


def status(host: Host, d: Deployment) -> list[tuple[str, str]]:
    """Rows of (what, state) describing the server; reads only.

    Each instance is described by what its process runs (environment, MLflow
    version, config digest), not by what is on disk: a restart still pending shows.
    """
    instances = host.read(facts.INSTANCES)
    units = ", ".join(f"{port}:{i.state}" for port, i in sorted(instances.items())) or "none"
    versions = host.read(facts.environment_versions(PATHS["envs_dir"]))
    current = host.read(facts.symlink_target(PATHS["current_env"])).rsplit("/", 1)[-1]
    configured = host.read(facts.env_file_value(PATHS["env_file"], "MLFLOW_KIT_CONFIG"))
    rows = [("units", units)]
    for port, instance in sorted(instances.items()):
        if instance.state != "active":
            rows.append((f"instance {port}", instance.state))
            continue
        env = instance.environment(PATHS["envs_dir"])
        since = host.read(facts.unit_properties(servers.unit(port), "ActiveEnterTimestamp"))
        pending = env != current or instance.config != configured
        rows.append(
            (
                f"instance {port}",
                f"MLflow {versions.get(env, '?')}, env {env or '?'}, up since "
                f"{since.get('ActiveEnterTimestamp') or '-'}"
                + (" (restart pending: run fab bootstrap)" if pending else ""),
            )
        )
        if d.auth == "basic" and d.stream_downloads:
            rows.append(
                (
                    f"user changes {port}",
                    _user_changes(host.read(facts.user_changes(servers.unit(port)))),
                )
            )
    rows += [
        ("mlflow on disk", f"{versions.get(current, 'not installed')} (env {current or '-'})"),
        ("/health via nginx", host.read(facts.HEALTH_CODE) or "no answer"),
        (
            "draining",
            f"YES: /health answers 503 to the load balancer ({PATHS['drain_flag']})"
            if host.read(facts.exists(PATHS["drain_flag"]))
            else "no",
        ),
    ]
    for what, address, port in preflight.endpoints(d):
        ok = host.read(facts.tcp_open(address, port))
        rows.append((what, f"{address}:{port} {'reachable' if ok else 'UNREACHABLE'}"))
    return rows + gc.status_rows(host, d) + metrics.status_rows(host)


def _user_changes(line: str) -> str:
    """What an instance's last word on user changes (kit_auth) means for its users."""
    if kit_auth.LISTENING_MESSAGE in line:
        return "heard at once (listening to the database)"
    if kit_auth.UNHEARD_MESSAGE in line:
        reason = line.split(": ", 1)[-1]
        return (
            f"UNHEARD ({reason}): admin checks query the database, and a changed password "
            f"opens this instance for up to {AUTH_CACHE_TTL_SECONDS} s more"
        )
    return "not listening yet"


def backup(play: Play, d: Deployment, selection: str = "") -> BackupRecord:
    """A backup of the database and the artifacts (provisioning.steps.backup); its record."""
    play.step("preflight", preflight.check, d)
    return play.step("backup", backup_steps.take, d, "on demand", selection)


def restore(play: Play, d: Deployment, backup_id: str) -> None:
    """The server put back as backup ``backup_id`` found it: the servers stop, the database
    and then the artifacts are restored, the schema is brought to the installed MLflow,
    the servers start and the health gate proves them. A failure before the database
    changed starts the servers again on what they had."""
    play.step("preflight", preflight.check, d)
    found = play.step("backup manifest", backup_steps.manifest, d, backup_id)
    ports = play.step("stop serving", backup_steps.stop_serving)
    try:
        play.step("restore database", backup_steps.restore_database, d, found)
    except Exception:
        play.step("resume serving", backup_steps.resume_serving, d, ports)
        raise
    play.step("restore artifacts", backup_steps.restore_artifacts, found)
    env = play.step("environment", backup_steps.current_environment)
    plan = play.step("schema check", schema.check, d, env)
    play.step("schema migration", schema.migrate, d, plan)
    if d.auth == "oidc":
        # The plugin's schema is the backup's (or gone, from a server without it): the
        # kit's account and token made right again before the gate uses them.
        play.step("oidc accounts", oidc.admin_account, d, env)
    play.step("resume serving", backup_steps.resume_serving, d, ports)
    play.step("health gate", health.gate, d)


def serve_model(play: Play, d: Deployment, request: models.Request) -> None:
    """Serve a registered model version at /models/<name>/ (models.json, then the program
    that makes it real), proven through nginx. A refusal (no room, no such model or alias)
    comes before anything changes; a failed run puts models.json back as it was."""
    play.step("preflight", preflight.check, d)
    play.step("room for the endpoint", models.room, d, request.name)
    play.step("model endpoint files", models.install, model_context(d))
    version = play.step(
        "model version", models.resolve, request.name, request.version, request.alias
    )
    before = play.step(
        "desired endpoints", models.desire, d, request.name, version, request.alias, request.follow
    )
    play.step("model endpoints", models.reconcile, before)
    play.step("endpoint check", models.check, d, request.name)


def unserve_model(play: Play, d: Deployment, name: str) -> None:
    """Take the endpoint ``name`` out of nginx, drain and stop it, remove what only it used."""
    play.step("model endpoint files", models.install, model_context(d))
    before = play.step("desired endpoints", models.withdraw, d, name)
    play.step("model endpoints", models.reconcile, before)


def models_status(host: Host, d: Deployment) -> list[tuple[str, str]]:
    """Rows of (endpoint, state) describing the model endpoints; reads only.

    What each endpoint serves is read from its processes (the version they loaded),
    what it was asked to serve from models.json, its last request from nginx's log.
    """
    wanted = models.parse_desired(host.read(facts.file_text(PATHS["models_desired"])))
    running = host.read(facts.MODEL_INSTANCES)
    live = host.read(facts.model_upstreams(PATHS["nginx_models_dir"]))
    last = host.read(facts.model_last_requests(PATHS["nginx_log_dir"]))
    rows = []
    for endpoint in wanted:
        ports = live.get(endpoint.name, [])
        serving = [i for i in running if i.name == endpoint.name and i.port in ports]
        active = [i for i in serving if i.state == "active"]
        state = "running" if active and len(active) == endpoint.workers else "DEGRADED"
        if not active:
            state = "NOT RUNNING"
        loaded = sorted({i.version for i in active}) or ["-"]
        uptime = min((i.uptime_s for i in active), default=0)
        request = last.get(endpoint.name)
        envs = sorted({_env_label(i.interpreter) for i in active})
        rows.append(
            (
                endpoint.name,
                f"{state} {len(active)}/{endpoint.workers}, asked {endpoint.asked}, "
                f"loaded version {', '.join(loaded)}, env {', '.join(envs) or '-'}, "
                f"up {_duration(uptime) if active else '-'}, last request "
                + (f"{request.time} ({request.status})" if request else "none")
                + f", {endpoint.memory_mb} MB per worker, {d.tracking_url}/models/{endpoint.name}/invocations",
            )
        )
    names = {e.name for e in wanted}
    for instance in running:
        if instance.name not in names or instance.port not in live.get(instance.name, []):
            rows.append(
                (f"{instance.name}-{instance.port}", f"{instance.state}, not in nginx (left over)")
            )
    return rows or [("model endpoints", "none (fab serve-model --name NAME --alias A)")]


def _env_label(interpreter: str) -> str:
    if interpreter.startswith(PATHS["model_envs_dir"] + "/"):
        return "model " + interpreter.removeprefix(PATHS["model_envs_dir"] + "/").split("/", 1)[0]
    if interpreter.startswith(PATHS["envs_dir"] + "/"):
        return "server " + interpreter.removeprefix(PATHS["envs_dir"] + "/").split("/", 1)[0]
    return interpreter or "-"


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
