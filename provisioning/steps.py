"""The steps of ``fab bootstrap``: each reads state, changes only what differs, says which.

Order matters: preflight changes nothing; the server is restarted only when a
file it reads (env file, auth config, unit, the active environment) changed;
the new environment is migrated before the servers switch to it, so a failed
migration leaves the old server running.
"""

from __future__ import annotations

import secrets
import shlex
import time
from pathlib import Path
from urllib.parse import urlsplit

from provisioning import facts
from provisioning.remote import PreflightError, RemoteError, Runner
from provisioning.render import FILES, GROUP, PATHS, USER, context, env_dir, render
from provisioning.settings import Deployment

SYSTEM_PACKAGES = ("nginx", "openssl", "curl", "ca-certificates", "bzip2")
MIN_FREE_DISK_MB = 4096
FIRST_SERVER_PORT = 5001
KIT_CA_DIR = f"{PATHS['local_ca_dir']}/mlflow-kit"
FLASK_KEY_FILE = f"{PATHS['config_dir']}/flask-secret-key"
HEALTH_TIMEOUT_S = 180
HEALTH_CHECK = "curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health"
JOURNAL_LINES = 40


# --------------------------------------------------------------------------- preflight


def preflight(runner: Runner, deployment: Deployment) -> tuple[bool, str]:
    """Supported OS, sudo, disk, and the database and storage endpoints reachable. Changes nothing."""
    sudo = runner.run("true", check=False)
    if sudo.exited != 0:
        raise PreflightError(
            f"[{runner.host}] {runner.conn.user} cannot run sudo without a password"
        )
    release = facts.parse_os_release(runner.run(facts.OS_RELEASE, sudo=False).stdout)
    if release.get("ID") != "debian" or release.get("VERSION_ID") != "12":
        raise PreflightError(
            f"[{runner.host}] unsupported OS {release.get('PRETTY_NAME', 'unknown')!r}: Debian 12 is required"
        )
    resources = facts.parse_resources(runner.run(facts.RESOURCES, sudo=False).stdout)
    if resources.free_disk_mb < MIN_FREE_DISK_MB:
        raise PreflightError(
            f"[{runner.host}] only {resources.free_disk_mb} MB free on /: at least {MIN_FREE_DISK_MB} MB needed"
        )
    for what, host, port in endpoints(deployment):
        if not reachable(runner, host, port):
            raise PreflightError(
                f"[{runner.host}] {what} at {host}:{port} is not reachable from the host "
                "(check the address, the port and the firewall between them)"
            )
    runner.resources = resources
    return (
        False,
        f"Debian 12, {resources.cores} cores, {resources.memory_mb} MB, {resources.free_disk_mb} MB free",
    )


def reachable(runner: Runner, host: str, port: int) -> bool:
    """Whether the host opens a TCP connection to ``host:port`` within 5 s."""
    probe = f"timeout 5 bash -c '</dev/tcp/{host}/{port}'"
    return runner.run(probe, sudo=False, check=False).exited == 0


def health_code(runner: Runner) -> str:
    """The HTTP status /health answers through nginx on the host ("" when nothing answers)."""
    return runner.run(HEALTH_CHECK, sudo=False, check=False).stdout.strip()


def endpoints(deployment: Deployment) -> list[tuple[str, str, int]]:
    """(what, host, port) the VM must reach: the database, and a storage endpoint when one is set."""
    uri = urlsplit(deployment.backend_store_uri.reveal())
    found = [("the database", uri.hostname or "", uri.port or 5432)]
    for key in ("MLFLOW_S3_ENDPOINT_URL", "STORAGE_EMULATOR_HOST"):
        if key in deployment.storage_env:
            url = urlsplit(deployment.storage_env[key])
            found.append(
                (
                    "the artifact store",
                    url.hostname or "",
                    url.port or (443 if url.scheme == "https" else 80),
                )
            )
    return found


# --------------------------------------------------------------------------- system


def trust_extra_ca_certs(runner: Runner, paths: list[str] | tuple[str, ...]) -> bool:
    """Install the given PEM CA certificates into the VM's trust store (apt, pip, the server)."""
    changed = False
    wanted = set()
    for path in paths:
        name = Path(path).name.removesuffix(".crt").removesuffix(".pem") + ".crt"
        wanted.add(name)
        changed |= runner.ensure_file(f"{KIT_CA_DIR}/{name}", Path(path).read_bytes(), mode="0644")
    present = runner.run(f"ls {KIT_CA_DIR} 2>/dev/null || true").stdout.split()
    for name in set(present) - wanted:
        runner.run(f"rm -f {KIT_CA_DIR}/{shlex.quote(name)}")
        changed = True
    if paths:
        # pip uses its own bundle unless told to use the system one.
        changed |= runner.ensure_file(
            "/etc/pip.conf", f"[global]\ncert = {PATHS['system_ca_bundle']}\n", mode="0644"
        )
    if changed:
        runner.run("update-ca-certificates")
    return changed


def system_packages(runner: Runner) -> tuple[bool, str]:
    query = facts.PACKAGES.replace("{packages}", " ".join(SYSTEM_PACKAGES))
    installed = facts.parse_installed_packages(runner.run(query, sudo=False).stdout)
    missing = [p for p in SYSTEM_PACKAGES if p not in installed]
    if not missing:
        return False, ""
    # policy-rc.d keeps apt from starting nginx with Debian's default site on port 80.
    runner.run(
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
    )
    try:
        runner.run("DEBIAN_FRONTEND=noninteractive apt-get update -q", timeout=900)
        runner.run(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
            + " ".join(missing),
            timeout=1800,
        )
    finally:
        runner.run("rm -f /usr/sbin/policy-rc.d", check=False)
    return True, "installed " + " ".join(missing)


def service_user(runner: Runner) -> bool:
    changed = False
    if runner.run(f"id -u {USER}", check=False, sudo=False).exited != 0:
        runner.run(
            f"useradd --system --user-group --home-dir {PATHS['state_dir']} "
            f"--shell /usr/sbin/nologin {USER}"
        )
        changed = True
    for path, owner, group, mode in (
        (PATHS["config_dir"], "root", GROUP, "750"),
        (PATHS["tls_dir"], "root", GROUP, "750"),
        (PATHS["state_dir"], USER, GROUP, "750"),
        (PATHS["mlflow_root"], "root", "root", "755"),
        (PATHS["envs_dir"], "root", "root", "755"),
        (PATHS["bin_dir"], "root", "root", "755"),
    ):
        state = runner.run(f"stat -c '%a %U %G' {path} 2>/dev/null || echo missing").stdout.split()
        if state != [mode, owner, group]:
            runner.run(f"install -d -m {mode} -o {owner} -g {group} {path}")
            changed = True
    return changed


# --------------------------------------------------------------------------- conda


def miniforge(runner: Runner, deployment: Deployment) -> bool:
    """Install Miniforge once, from the pinned URL, verified by the pinned sha256."""
    if runner.run(f"test -x {PATHS['conda_bin']}", check=False).exited == 0:
        return False
    root = PATHS["conda_root"]
    runner.run(f"rm -rf {root}")  # a half-finished earlier install
    tmp = runner.run("mktemp -d").stdout.strip()
    installer = f"{tmp}/miniforge.sh"
    try:
        runner.run(
            f"curl -fsSL --retry 3 -o {installer} {shlex.quote(deployment.miniforge_url)}",
            timeout=900,
        )
        runner.run(f"echo '{deployment.miniforge_sha256}  {installer}' | sha256sum -c --quiet -")
        runner.run(f"bash {installer} -b -p {root}", timeout=1800)
    finally:
        runner.run(f"rm -rf {tmp}", check=False)
    return True


def conda_env_commands(prefix: str) -> list[str]:
    """The exact conda commands that build the server's environment at ``prefix``."""
    conda = PATHS["conda_bin"]
    return [
        f"{conda} env create --quiet --prefix {prefix} --file {PATHS['environment_yml']}",
        f"touch {prefix}/.kit-complete",
    ]


def conda_environment(
    runner: Runner, environment_yml: str, deployment: Deployment
) -> tuple[bool, str]:
    """The environment for this environment.yml, built once; ``next`` points at it."""
    changed = runner.ensure_file(PATHS["environment_yml"], environment_yml, mode="0644")
    prefix = env_dir(environment_yml)
    if runner.run(f"test -e {prefix}/.kit-complete", check=False).exited != 0:
        runner.run(f"rm -rf {prefix}")  # an interrupted earlier build
        env = ""
        if deployment.extra_ca_certs:
            bundle = PATHS["system_ca_bundle"]
            env = (
                f"env SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle} PIP_CERT={bundle} "
                f"CONDA_SSL_VERIFY={bundle} "
            )
        for command in conda_env_commands(prefix):
            runner.run(env + command, timeout=3600)
        changed = True
    changed |= _symlink(runner, PATHS["next_env"], prefix)
    return changed, prefix.rsplit("/", 1)[-1]


def _symlink(runner: Runner, link: str, target: str) -> bool:
    current = runner.run(f"readlink {link} || true").stdout.strip()
    if current == target:
        return False
    runner.run(f"ln -sfn {target} {link}.kit-new && mv -fT {link}.kit-new {link}")
    return True


# --------------------------------------------------------------------------- configuration


def flask_secret_key(runner: Runner, deployment: Deployment) -> tuple[str, bool]:
    """The session-signing key: from settings, else generated once and kept on the VM."""
    if deployment.flask_secret_key is not None:
        key = deployment.flask_secret_key.reveal()
        return key, runner.ensure_file(FLASK_KEY_FILE, key, mode="0600", owner=USER, group=GROUP)
    existing = runner.run(f"cat {FLASK_KEY_FILE} 2>/dev/null || true").stdout.strip()
    if existing:
        return existing, False
    key = secrets.token_hex(32)
    runner.ensure_file(FLASK_KEY_FILE, key, mode="0600", owner=USER, group=GROUP)
    return key, True


def config_files(runner: Runner, ctx: dict, names: tuple[str, ...]) -> list[str]:
    """Render and install ``names`` (templates/); return the ones that changed."""
    changed = []
    for name in names:
        path, owner, group, mode = FILES[name]
        if runner.ensure_file(path, render(name, ctx), mode=f"{mode:o}", owner=owner, group=group):
            changed.append(name)
    return changed


def migrate(runner: Runner, deployment: Deployment, env_name: str) -> tuple[bool, str]:
    """Upgrade the tracking and auth schemas once per MLflow version and environment."""
    marker = f"{PATHS['state_dir']}/migrated-{deployment.mlflow_version}-{env_name}"
    if runner.run(f"test -e {marker}", check=False).exited == 0:
        return False, ""
    result = runner.run("systemctl start mlflow-migrate.service", check=False, timeout=3600)
    if result.exited != 0:
        journal = runner.run(
            f"journalctl -u mlflow-migrate.service -n {JOURNAL_LINES} --no-pager -o cat",
            check=False,
        ).stdout
        raise RemoteError(
            runner.host,
            runner.current,
            "systemctl start mlflow-migrate.service",
            result.exited,
            journal,
        )
    runner.run(f"install -m 0644 -o {USER} -g {GROUP} /dev/null {marker}")
    return True, f"schema at MLflow {deployment.mlflow_version}"


def tls_certificate(runner: Runner, deployment: Deployment) -> tuple[bool, str]:
    """A certificate for nginx: self-signed on the VM, provided files, or Let's Encrypt."""
    cert, key = PATHS["tls_cert"], PATHS["tls_key"]
    if deployment.tls_mode == "provided":
        changed = runner.ensure_file(cert, Path(deployment.tls_cert_file).read_bytes(), mode="0644")
        changed |= runner.ensure_file(key, Path(deployment.tls_key_file).read_bytes(), mode="0600")
        return changed, "provided"
    if deployment.tls_mode == "letsencrypt":
        return letsencrypt(runner, deployment)
    names = self_signed_names(deployment)
    current = runner.run(
        f"openssl x509 -in {cert} -noout -ext subjectAltName 2>/dev/null || true"
    ).stdout
    if current and all(entry in current for entry in names_in_openssl_form(names)):
        return False, "self-signed"
    san = ",".join(names)
    runner.run(
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj '/CN={deployment.public_host}' "
        f"-addext 'subjectAltName={san}' -keyout {key}.kit-new -out {cert}.kit-new 2>/dev/null"
        f" && chmod 600 {key}.kit-new && mv -f {key}.kit-new {key} && mv -f {cert}.kit-new {cert}"
    )
    return True, "self-signed, generated on the host"


def self_signed_names(deployment: Deployment) -> list[str]:
    names = []
    for name in (deployment.public_host, deployment.host, "localhost", "127.0.0.1"):
        kind = "IP" if name.replace(".", "").isdigit() or ":" in name else "DNS"
        names.append(f"{kind}:{name}")
    return list(dict.fromkeys(names))


def names_in_openssl_form(names: list[str]) -> list[str]:
    return [n.replace("IP:", "IP Address:") for n in names]


def letsencrypt(runner: Runner, deployment: Deployment) -> tuple[bool, str]:
    live = f"{PATHS['letsencrypt_live']}/{deployment.domain}/fullchain.pem"
    if runner.run(f"test -e {live}", check=False).exited == 0:
        return False, "letsencrypt"
    runner.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q certbot", timeout=900)
    runner.run(f"install -d {PATHS['acme_webroot']}")
    runner.run(
        f"certbot certonly --webroot -w {PATHS['acme_webroot']} -d {shlex.quote(deployment.domain)} "
        f"-m {shlex.quote(deployment.acme_email)} --agree-tos --non-interactive",
        timeout=600,
    )
    return True, "letsencrypt"


def nginx_site(runner: Runner, ctx: dict, certificate_changed: bool) -> tuple[bool, str]:
    changed = bool(config_files(runner, ctx, ("nginx-mlflow.conf.j2",))) or certificate_changed
    changed |= _symlink(runner, PATHS["nginx_site_enabled"], PATHS["nginx_site"])
    if runner.run("test -e /etc/nginx/sites-enabled/default", check=False).exited == 0:
        runner.run("rm -f /etc/nginx/sites-enabled/default")
        changed = True
    runner.run("nginx -t -q")
    active = runner.run("systemctl is-active nginx", check=False, sudo=False).stdout.strip()
    enabled = runner.run("systemctl is-enabled nginx", check=False, sudo=False).stdout.strip()
    if enabled != "enabled":
        runner.run("systemctl enable nginx")
        changed = True
    if active != "active":
        runner.run("systemctl start nginx")
        return True, "started"
    if changed:
        runner.run("systemctl reload nginx")
        return True, "reloaded"
    return False, ""


# --------------------------------------------------------------------------- servers


def server_units(
    runner: Runner, ports: list[int], restart: bool, unit_changed: bool
) -> tuple[bool, str]:
    """mlflow-server@PORT for exactly ``ports``: enabled, running, restarted only if told."""
    if unit_changed:
        runner.run("systemctl daemon-reload")
    present = facts.parse_server_instances(runner.run(facts.UNITS, sudo=False).stdout)
    changed, actions = False, []
    for port in sorted(set(present) - set(ports)):
        runner.run(f"systemctl disable --now mlflow-server@{port}.service")
        changed = True
        actions.append(f"stopped {port}")
    for port in ports:
        unit = f"mlflow-server@{port}.service"
        if (
            runner.run(f"systemctl is-enabled {unit}", check=False, sudo=False).stdout.strip()
            != "enabled"
        ):
            runner.run(f"systemctl enable {unit}")
            changed = True
        state = present.get(port)
        if state != "active":
            # A unit that hit its start limit stays failed until reset.
            runner.run(f"systemctl reset-failed {unit} 2>/dev/null || true")
            runner.run(f"systemctl restart {unit}")
            changed = True
            actions.append(f"started {port}")
        elif restart:
            runner.run(f"systemctl restart {unit}")
            changed = True
            actions.append(f"restarted {port}")
    return changed, ", ".join(actions)


def health_gate(runner: Runner, deployment: Deployment) -> tuple[bool, str]:
    """/health through nginx, then the MLflow client logs a metric and reads it back."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while True:
        code = health_code(runner)
        if code == "200":
            break
        if time.monotonic() > deadline:
            raise RemoteError(
                runner.host,
                runner.current,
                HEALTH_CHECK,
                1,
                f"/health answered {code or 'nothing'} after {HEALTH_TIMEOUT_S}s\n"
                + server_journal(runner),
            )
        time.sleep(1)
    # The client reads the credentials from its stdin, never from its command line.
    result = runner.run(
        f"{PATHS['current_env']}/bin/python -c {shlex.quote(SMOKE_SCRIPT)}",
        sudo=False,
        check=False,
        stdin=f"{deployment.admin_username}\n{deployment.admin_password.reveal()}\n",
        timeout=300,
    )
    if result.exited != 0 or "smoke ok" not in result.stdout:
        raise RemoteError(
            runner.host,
            runner.current,
            "MLflow client smoke check",
            result.exited,
            (result.stderr or result.stdout) + "\n" + server_journal(runner),
        )
    return False, result.stdout.strip().splitlines()[-1]


SMOKE_SCRIPT = """
import os, sys
os.environ["MLFLOW_TRACKING_USERNAME"] = sys.stdin.readline().strip()
os.environ["MLFLOW_TRACKING_PASSWORD"] = sys.stdin.readline().strip()
os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
import warnings; warnings.filterwarnings("ignore")
from mlflow.tracking import MlflowClient
client = MlflowClient("https://127.0.0.1")
experiment = client.get_experiment_by_name("kit-smoke-check")
experiment_id = experiment.experiment_id if experiment else client.create_experiment("kit-smoke-check")
run = client.create_run(experiment_id)
client.log_metric(run.info.run_id, "smoke", 1.0)
client.set_terminated(run.info.run_id)
value = client.get_run(run.info.run_id).data.metrics["smoke"]
assert value == 1.0, value
print(f"smoke ok: logged and read back a metric in experiment {experiment_id}")
"""


def server_journal(runner: Runner) -> str:
    return runner.run(
        f"journalctl -u 'mlflow-server@*' -n {JOURNAL_LINES} --no-pager -o short-iso", check=False
    ).stdout


# --------------------------------------------------------------------------- the whole bootstrap


def bootstrap(runner: Runner, deployment: Deployment) -> int:
    """Converge the host to ``deployment``; return the number of steps that changed something."""
    runner.step("preflight", lambda: preflight(runner, deployment))
    runner.step("ca certificates", lambda: trust_extra_ca_certs(runner, deployment.extra_ca_certs))
    runner.step("system packages", lambda: system_packages(runner))
    runner.step("mlflow user and directories", lambda: service_user(runner))
    runner.step("miniforge", lambda: miniforge(runner, deployment))
    resources = runner.resources
    instances = deployment.server_instances or facts.server_instances_for(resources)
    if deployment.job_execution:
        # MLflow's job runner schedules periodic jobs in every server process that runs
        # it; one instance keeps each job scheduled once.
        instances = 1
    ports = [FIRST_SERVER_PORT + i for i in range(instances)]
    key_holder = {}

    def secret_key():
        key_holder["key"], changed = flask_secret_key(runner, deployment)
        return changed

    runner.step("flask secret key", secret_key)
    ctx = context(
        deployment,
        server_ports=ports,
        flask_secret_key=key_holder["key"],
        job_execution=deployment.job_execution,
    )
    environment_yml = render("environment.yml.j2", ctx)
    env_holder = {}

    def environment():
        changed, env_holder["name"] = conda_environment(runner, environment_yml, deployment)
        return changed, f"env {env_holder['name']}"

    runner.step("conda environment", environment)
    changed_config: list[str] = []

    def configuration():
        changed_config.extend(
            config_files(
                runner,
                ctx,
                (
                    "mlflow.env.j2",
                    "basic_auth.ini.j2",
                    "mlflow-migrate.py",
                    "mlflow-server@.service.j2",
                    "mlflow-migrate.service.j2",
                ),
            )
        )
        if changed_config:
            runner.run("systemctl daemon-reload")
        return bool(changed_config), ", ".join(changed_config)

    runner.step("configuration files", configuration)
    runner.step("schema migration", lambda: migrate(runner, deployment, env_holder["name"]))
    switched = {}

    def activate():
        switched["env"] = _symlink(runner, PATHS["current_env"], env_dir(environment_yml))
        return switched["env"], f"env {env_holder['name']}" if switched["env"] else ""

    runner.step("activate environment", activate)
    restart = switched["env"] or any(
        n in changed_config
        for n in ("mlflow.env.j2", "basic_auth.ini.j2", "mlflow-server@.service.j2")
    )
    runner.step(
        "mlflow servers",
        lambda: server_units(runner, ports, restart, "mlflow-server@.service.j2" in changed_config),
    )
    certificate = runner.step("tls certificate", lambda: tls_certificate(runner, deployment))
    runner.step("nginx", lambda: nginx_site(runner, ctx, certificate.changed))
    runner.step("health gate", lambda: health_gate(runner, deployment))
    return runner.changes
