"""Model endpoints: registered model versions served as authenticated HTTP endpoints.

The operator's wish is one file on the host (``models.json``: each endpoint's name,
version or alias, and its size from the settings), written here through the kit's
file convergence. One program on the host (templates/mlflow-models.py with its
modules kit_models_files.py and kit_models_host.py, run by ``mlflow-models.service``)
makes it real: downloads, environments, units, nginx.
``fab serve-model`` and ``fab unserve-model`` start that unit and wait for it (a
dropped session neither stops nor repeats it), and the follow timer starts the same
unit: one code path.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from provisioning import facts, files, sizing, waiting
from provisioning.jobs import RUNNING_STATES
from provisioning.layout import FILES, PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.steps.admin import curl_login
from provisioning.steps.configuration import install_files
from provisioning.steps.servers import SURGE_PORT
from provisioning.transport import Host, PreflightError

#: The program's modules go first: the program never lands on a host without the
#: modules it imports.
MODEL_FILES = (
    "kit_models_files.py",
    "kit_models_host.py",
    "mlflow-models.py",
    "mlflow-model@.service.j2",
    "mlflow-models.service.j2",
    "mlflow-models.timer.j2",
)
MODELS_UNIT = "mlflow-models.service"
TIMER_UNIT = "mlflow-models.timer"
#: (path, mode) of the directories the model endpoints live in, all root's.
DIRECTORIES = (
    (PATHS["models_dir"], "755"),
    (PATHS["model_envs_dir"], "755"),
    (PATHS["nginx_models_dir"], "755"),
)
#: A run builds environments (pip, conda) and waits for instances to load.
RECONCILE_TIMEOUT_S = 3600
POLL_S = 2


@dataclass(frozen=True)
class Endpoint:
    """One wanted endpoint, as models.json keeps it."""

    name: str
    version: str
    alias: str = ""
    follow: bool = False
    workers: int = 1
    memory_mb: int = 512

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "follow": self.follow,
            "workers": self.workers,
            "memory_mb": self.memory_mb,
        }

    @property
    def asked(self) -> str:
        """What the operator asked for: ``@alias`` (following or not) or ``version N``."""
        if self.alias:
            return f"@{self.alias}" + (" (following)" if self.follow else "")
        return f"version {self.version}"


@dataclass(frozen=True)
class Request:
    """``fab serve-model``'s arguments."""

    name: str
    version: str = ""
    alias: str = ""
    follow: bool = False


def parse_desired(text: str) -> list[Endpoint]:
    if not text.strip():
        return []
    return [Endpoint(**entry) for entry in json.loads(text)["endpoints"]]


def desired_text(endpoints: list[Endpoint]) -> str:
    """models.json as the kit writes it: the same endpoints always give the same bytes."""
    ordered = sorted(endpoints, key=lambda e: e.name)
    return json.dumps({"endpoints": [e.as_json() for e in ordered]}, indent=2) + "\n"


def sizes_for(deployment: Deployment, name: str) -> tuple[int, int]:
    """(workers, memory per worker) of the endpoint ``name``, from the settings."""
    override = deployment.model_endpoints.get(name, {})
    return (
        override.get("workers", deployment.model_workers),
        override.get("memory_mb", deployment.model_memory_mb),
    )


def resized(deployment: Deployment, endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints with the sizes the settings give them now."""
    out = []
    for e in endpoints:
        workers, memory = sizes_for(deployment, e.name)
        out.append(Endpoint(e.name, e.version, e.alias, e.follow, workers, memory))
    return out


def room_message(
    host: str, resources: facts.Resources, servers: int, endpoints: list[Endpoint]
) -> str | None:
    """Why these endpoints do not fit on the host (None when they do)."""
    room = sizing.model_room_mb(resources.memory_mb, servers)
    need = sizing.models_need_mb([(e.workers, e.memory_mb) for e in endpoints])
    if need <= room:
        return None
    each = ", ".join(f"{e.name} {e.workers} x {e.memory_mb} MB" for e in endpoints)
    largest = max(e.workers * e.memory_mb for e in endpoints)
    return (
        f"[{host}] no room for the model endpoints: they need {need} MB ({each}, plus "
        f"{largest} MB to switch versions) and the host has {max(room, 0)} MB for them "
        f"({resources.memory_mb} MB less {sizing.RESERVED_MB} MB kept for the OS, nginx and "
        f"builds, {sizing.METRICS_MB} MB for mlflow-metrics and {servers} tracking server "
        f"instance(s) x {sizing.INSTANCE_MB} MB, which come first). Lower model_memory_mb or "
        "model_workers (or model_endpoints.<name>), unserve an endpoint, or use a VM with more "
        "memory. Nothing was changed."
    )


# --------------------------------------------------------------------------- steps


def room(host: Host, deployment: Deployment, name: str) -> Outcome[None]:
    """The endpoints with ``name`` added (or resized) fit beside the tracking servers;
    refused otherwise, naming the settings and the numbers. Changes nothing."""
    resources = host.read(facts.RESOURCES)
    present = parse_desired(host.read(facts.file_text(PATHS["models_desired"])))
    servers = max(1, sum(
        1 for port, i in host.read(facts.INSTANCES).items() if port != SURGE_PORT and i.state == "active"
    ))  # fmt: skip
    workers, memory = sizes_for(deployment, name)
    wanted = resized(deployment, [e for e in present if e.name != name])
    wanted.append(Endpoint(name, "", workers=workers, memory_mb=memory))
    refusal = room_message(host.name, resources, servers, wanted)
    if refusal:
        raise PreflightError(refusal)
    need = sizing.models_need_mb([(e.workers, e.memory_mb) for e in wanted])
    room_mb = sizing.model_room_mb(resources.memory_mb, servers)
    return unchanged(f"{len(wanted)} endpoint(s) need {need} of {room_mb} MB")


def install(host: Host, ctx: dict) -> Outcome[frozenset[str]]:
    """The program and its modules, the units and the timer on the host, and their
    directories. Needs a bootstrapped host whose nginx site includes the model endpoints."""
    python = f"{PATHS['current_env']}/bin/python"
    if not host.read(facts.executable(python)) or not host.read(
        facts.file_contains(PATHS["nginx_site"], PATHS["nginx_models_dir"] + "/")
    ):
        raise PreflightError(
            f"[{host.name}] the MLflow server is not bootstrapped with model endpoints here "
            f"({python} and an nginx site that includes {PATHS['nginx_models_dir']}): "
            "run fab bootstrap first"
        )
    fixed = [
        path
        for path, mode in DIRECTORIES
        if files.ensure_directory(host, path, mode=mode, owner="root", group="root")
    ]
    installed = install_files(host, ctx, MODEL_FILES)
    if any(FILES[name].is_unit for name in installed):
        host.run("systemctl daemon-reload")
    if (
        "mlflow-models.timer.j2" in installed
        and host.read(facts.unit_active(TIMER_UNIT)) == "active"
    ):
        host.run(f"systemctl restart {TIMER_UNIT}")
    if not installed and not fixed:
        return unchanged(f"{len(MODEL_FILES)} files as rendered", installed)
    return changed(", ".join([*fixed, *(n for n in MODEL_FILES if n in installed)]), installed)


def resolve(host: Host, name: str, version: str, alias: str) -> Outcome[str]:
    """The version to serve: ``version``, checked, or the one ``alias`` points at now.
    Read on the host through the tracking server (the admin's credentials stay there)."""
    how = f"--alias {shlex.quote(alias)}" if alias else f"--version {shlex.quote(version)}"
    command = (
        f"{PATHS['current_env']}/bin/python {PATHS['models_program']} resolve "
        f"{shlex.quote(name)} {how}"
    )
    result = host.run(command, check=False, timeout=120)
    if result.exited != 0:
        raise host.error(command, result.exited, result.stderr or result.stdout)
    found = json.loads(result.stdout.strip().splitlines()[-1])["version"]
    asked = f"@{alias}" if alias else f"version {version}"
    return unchanged(f"{name} {asked}: version {found}", found)


def desire(
    host: Host, deployment: Deployment, name: str, version: str, alias: str, follow: bool
) -> Outcome[str | None]:
    """models.json with the endpoint ``name`` serving ``version`` (asked as ``alias``, followed
    or not), every endpoint sized as the settings say now. The value is what the file held
    before when this changed it (for a failed run to put back), else None."""
    before = host.read(facts.file_text(PATHS["models_desired"]))
    present = parse_desired(before)
    workers, memory = sizes_for(deployment, name)
    # An endpoint that follows its alias serves whatever version it points at.
    endpoint = Endpoint(name, "" if follow else version, alias, follow, workers, memory)
    wanted = [e for e in resized(deployment, present) if e.name != name] + [endpoint]
    what = f"{name} {endpoint.asked}" + (f" = version {version}" if alias else "")
    return _write(host, before, wanted, what)


def withdraw(host: Host, deployment: Deployment, name: str) -> Outcome[str | None]:
    """models.json without the endpoint ``name``; the value as for :func:`desire`."""
    before = host.read(facts.file_text(PATHS["models_desired"]))
    present = parse_desired(before)
    if name not in {e.name for e in present}:
        return unchanged(f"{name} is not served", None)
    wanted = [e for e in resized(deployment, present) if e.name != name]
    return _write(host, before, wanted, f"{name} withdrawn")


def _write(host: Host, before: str, wanted: list[Endpoint], what: str) -> Outcome[str | None]:
    if files.ensure_file(host, PATHS["models_desired"], desired_text(wanted), mode="0644"):
        return changed(what, before)
    return unchanged(f"{what}, as models.json has it", None)


def reconcile(host: Host, before: str | None) -> Outcome[dict]:
    """Run the program (mlflow-models.service) and wait for it; a run still at work from an
    earlier session is waited for first, then a fresh one reads what was just written.

    A run that fails leaves every running endpoint as it was and names why (pip's or
    conda's own error); models.json is then put back as it was (``before``, when the
    task changed it).
    """
    waiting.until(
        host,
        lambda: host.read(facts.unit_active(MODELS_UNIT)),
        lambda state: state not in RUNNING_STATES,
        timeout=RECONCILE_TIMEOUT_S,
        poll=POLL_S,
        late=lambda _state: host.error(
            f"wait for {MODELS_UNIT}",
            -1,
            f"an earlier run is still at work; follow it with `journalctl -fu {MODELS_UNIT}`",
        ),
        note=lambda _state, seconds: (
            f"an earlier {MODELS_UNIT} run is at work: waiting for it ({seconds:.0f}s)"
        ),
    )
    # Builds that failed before (in a timer's run) are tried again when an operator asks.
    host.run(f"rm -f {PATHS['model_envs_dir']}/*.kit-failed")
    # This run's lines are those after the cursor; its summary is the first one there.
    cursor = host.read(facts.journal_cursor(MODELS_UNIT))
    result = host.run(f"systemctl start {MODELS_UNIT}", check=False, timeout=RECONCILE_TIMEOUT_S)
    log = host.read(facts.journal_after(MODELS_UNIT, cursor))
    summary = run_summary(log)
    if result.exited != 0 or summary is None or summary["failed"]:
        if before is not None:
            if before:
                files.ensure_file(host, PATHS["models_desired"], before + "\n", mode="0644")
            else:
                files.ensure_absent(host, PATHS["models_desired"])
        failed = (summary or {}).get("failed") or {}
        detail = "\n".join(f"{name}: {why}" for name, why in failed.items()) or log
        raise host.error(f"systemctl start {MODELS_UNIT}", result.exited or 1, detail)
    if summary["changed"]:
        detail = "; ".join(f"{n}: {what}" for n, what in sorted(summary["changed"].items()))
        return changed(detail, summary)
    detail = "; ".join(f"{n}: {what}" for n, what in sorted(summary["ok"].items()))
    return unchanged(detail or "no endpoints", summary)


def run_summary(log: str) -> dict | None:
    """The first ``summary: {json}`` line the program printed, or None."""
    for line in log.splitlines():
        if line.startswith("summary: "):
            return json.loads(line.removeprefix("summary: "))
    return None


def check(host: Host, deployment: Deployment, name: str) -> Outcome[None]:
    """/models/NAME/ping through nginx: 200 with the admin's credentials, 401 without."""
    with_login = host.read(
        facts.model_ping(name, with_credentials=True),
        stdin=curl_login(deployment.admin_username, deployment.admin_password.reveal()),
    )
    without = host.read(facts.model_ping(name, with_credentials=False))
    if with_login != "200" or without != "401":
        raise host.error(
            f"GET https://127.0.0.1/models/{name}/ping",
            1,
            f"answered {with_login} with the admin's credentials (200 wanted) and {without} "
            "without (401 wanted)",
        )
    return unchanged(
        f"/models/{name}/ping: 200 as {deployment.admin_username}, 401 without credentials"
    )
