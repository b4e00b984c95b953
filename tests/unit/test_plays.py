"""Plays: the exact order of steps, and what each change restarts or reloads.

A recording play runs no step: it records each step's name and arguments and
answers with the value a table row scripts, so the decisions the play derives
(provisioning.handlers) are checked for each kind of change.
"""

from __future__ import annotations

import sys

import pytest

from provisioning import facts, handlers, plays
from provisioning.backups.record import BackupRecord
from provisioning.handlers import inputs_of
from provisioning.layout import (
    FILES,
    NGINX_UNIT_NAME,
    OTHER_STATE,
    SERVER_UNIT_NAME,
    SYSTEM_SERVICES,
    TLS_CERTIFICATE,
)
from provisioning.render import config_digest, render
from provisioning.settings import Deployment
from provisioning.steps import models
from provisioning.steps.conda import Environment
from provisioning.steps.schema import Schema, SchemaPlan
from provisioning.steps.secrets import ServerSecrets
from provisioning.transport import RemoteError
from tests.unit.test_step_cases import BASE

BOOTSTRAP_STEPS = [
    "preflight",
    "admin password",
    "first boot",
    "ca certificates",
    "system packages",
    "backup tools",
    "database certificate",
    "mlflow user and directories",
    "miniforge",
    "server secrets",
    "kit wheel",
    "package lock",
    "wheelhouse",
    "conda environment",
    "schema check",
    "configuration files",
    "schema migration",
    "activate environment",
    "mlflow servers",
    "tls certificate",
    "nginx",
    "health gate",
    "permissions",
    "garbage collection",
    "metrics",
    "old environments",
]


class RecordingPlay:
    def __init__(self, values: dict):
        self.values = values
        self.steps: list[tuple[str, object, tuple]] = []

    def step(self, name, function, *args):
        self.steps.append((name, function, args))
        return self.values.get(name)

    def args(self, name: str) -> tuple:
        return next(args for step, _f, args in self.steps if step == name)


def record_bootstrap(deployment: Deployment, **changes) -> RecordingPlay:
    values = {
        "preflight": facts.Resources(2, 4000, 20000),
        "server secrets": ServerSecrets("k" * 64, "p" * 48, 1),
        "conda environment": Environment("/opt/mlflow/envs/0123456789abcdef"),
        "configuration files": frozenset(changes.get("files", ())),
        "schema check": SchemaPlan("3.17.2", Schema("a", "a", True, 0), Schema("b", "b", True, 0)),
        "activate environment": None,
        "tls certificate": frozenset(changes.get("certificate", ())),
    }
    recording = RecordingPlay(values)
    plays.bootstrap(recording, deployment)
    return recording


@pytest.mark.parametrize(
    ("changes", "daemon_reload", "nginx_reloads"),
    [
        ({}, False, False),
        ({"files": ["mlflow.env.j2"]}, False, False),
        ({"files": ["basic_auth.ini.j2"]}, False, False),
        ({"files": ["mlflow-server@.service.j2"]}, True, False),
        ({"files": ["mlflow-migrate.service.j2"]}, True, False),
        ({"files": ["mlflow-migrate.py"]}, False, False),
        ({"certificate": [TLS_CERTIFICATE]}, False, True),
    ],
    ids=[
        "nothing-changed",
        "env-file-changed",
        "auth-config-changed",
        "server-unit-changed",
        "migrate-unit-changed",
        "migrate-script-changed",
        "certificate-changed",
    ],
)
def test_bootstrap_order_and_what_each_change_reloads(changes, daemon_reload, nginx_reloads):
    recording = record_bootstrap(Deployment(**BASE), **changes)

    assert [name for name, _f, _a in recording.steps] == BOOTSTRAP_STEPS
    installed = handlers.actions_for(recording.values["configuration files"])
    assert installed.daemon_reload is daemon_reload
    _ctx, _names, changed = recording.args("nginx")
    assert handlers.actions_for(changed).reloads(NGINX_UNIT_NAME) is nginx_reloads


def test_servers_converge_to_the_activated_environment_and_the_digest_of_their_inputs():
    recording = record_bootstrap(Deployment(**BASE))
    ctx, env = recording.args("mlflow servers")
    assert env == recording.values["conda environment"]
    assert ctx["server_ports"] == [5001, 5002]
    assert ctx["config_digest"] == config_digest(ctx)


@pytest.mark.parametrize(
    ("change", "restarts"),
    [
        ({"admin_password": "another-long-password"}, True),  # env file
        ({"storage_env": {"AWS_DEFAULT_REGION": "eu-west-1"}}, True),  # env file
        ({"tracking_url": "https://mlflow.example.com"}, True),  # unit: --allowed-hosts
        ({"db_max_connections": 50}, True),  # env file: pool sizes
        (
            {"tls_mode": "letsencrypt", "domain": "m.example.com", "acme_email": "a@example.com"},
            True,
        ),
        # A new environment, switched on its own (3.18.0 has no committed lock).
        ({"mlflow_version": "3.18.0", "install_from_lock": False}, False),
    ],
)
def test_what_the_servers_read_is_in_their_digest(change, restarts):
    base = record_bootstrap(Deployment(**BASE)).args("mlflow servers")[0]["config_digest"]
    other = record_bootstrap(Deployment(**{**BASE, **change})).args("mlflow servers")[0]
    assert (other["config_digest"] != base) is restarts
    assert inputs_of(SERVER_UNIT_NAME) == (
        "mlflow.env.j2",
        "basic_auth.ini.j2",
        "mlflow-server@.service.j2",
        "kit_server_site.py",
    )


def test_the_new_environment_is_checked_and_migrates_before_it_is_activated():
    recording = record_bootstrap(Deployment(**BASE))
    env = recording.values["conda environment"]
    assert recording.args("schema check")[1] == env
    assert recording.args("schema migration")[1] == recording.values["schema check"]
    assert recording.args("activate environment") == (env,)
    assert recording.args("old environments") == (2,)


class FailingPlay(RecordingPlay):
    def __init__(self, values: dict, failing: str):
        super().__init__(values)
        self.failing = failing

    def step(self, name, function, *args):
        value = super().step(name, function, *args)
        if name == self.failing:
            raise RemoteError("203.0.113.10", name, "x", 1, "failed")
        return value


@pytest.mark.parametrize("failing", ["mlflow servers", "nginx", "health gate"])
def test_a_switch_that_fails_rolls_back_to_the_previous_environment(failing):
    values = record_bootstrap(Deployment(**BASE)).values
    previous = Environment("/opt/mlflow/envs/fedcba9876543210")
    recording = FailingPlay({**values, "activate environment": previous}, failing)
    with pytest.raises(RemoteError):
        plays.bootstrap(recording, Deployment(**BASE))
    names = [name for name, _f, _a in recording.steps]
    assert names[-1] == "roll back" and names[-2] == failing
    assert recording.args("roll back")[1] == previous
    # The environment that failed to serve is the one built by this play: built again next time.
    assert recording.args("roll back")[3] == recording.args("activate environment")[0]


def test_a_failure_before_any_switch_rolls_nothing_back():
    values = record_bootstrap(Deployment(**BASE)).values
    recording = FailingPlay(values, "health gate")  # activate changed nothing: value None
    with pytest.raises(RemoteError):
        plays.bootstrap(recording, Deployment(**BASE))
    assert [name for name, _f, _a in recording.steps][-1] == "health gate"


def test_rotate_kek_play_rotates_then_bootstraps():
    recording = RecordingPlay(
        {"preflight": facts.Resources(2, 4000, 20000)} | record_bootstrap(Deployment(**BASE)).values
    )
    plays.rotate_kek(recording, Deployment(**BASE))
    assert [name for name, _f, _a in recording.steps] == [
        "preflight",
        "rotate KEK",
        *BOOTSTRAP_STEPS,
    ]


def test_restart_play_restarts_then_proves_the_server():
    recording = RecordingPlay({})
    plays.restart(recording, Deployment(**BASE))
    assert [name for name, _f, _a in recording.steps] == ["restart", "health gate"]


def installed_by_bootstrap(deployment: Deployment) -> set[str]:
    """Templates the bootstrap play installs: passed by name, or rendered and passed as content."""
    recording = record_bootstrap(deployment)
    ctx = recording.args("configuration files")[0]
    rendered = {}
    for name in FILES:
        try:
            rendered[render(name, ctx)] = name
        except Exception:  # noqa: S112 - a template this deployment cannot render is not installed
            continue
    names: set[str] = set()
    for _name, function, args in recording.steps:
        # What a step may install is named in its module (proxy.ACME_FILES and the like).
        module = sys.modules[function.__module__]
        for constant, value in vars(module).items():
            if constant.endswith("_FILES") and isinstance(value, tuple):
                names.update(n for n in value if n in FILES)
        for arg in args:
            if isinstance(arg, str) and arg in rendered:
                names.add(rendered[arg])
            if (
                isinstance(arg, tuple)
                and arg
                and all(isinstance(a, str) and a in FILES for a in arg)
            ):
                names.update(arg)
    return names


def test_every_managed_file_is_installed_by_a_play_and_notifies_a_service_that_exists():
    letsencrypt = Deployment(
        **BASE, tls_mode="letsencrypt", domain="mlflow.example.com", acme_email="ops@example.com"
    )
    installed = installed_by_bootstrap(Deployment(**BASE)) | installed_by_bootstrap(letsencrypt)
    # fab serve-model installs the model endpoints' files (tests/unit/test_models_plays.py).
    installed |= set(models.MODEL_FILES)
    assert installed == set(FILES)

    units = {file.path.rsplit("/", 1)[-1] for file in FILES.values() if file.is_unit}
    services = units | set(SYSTEM_SERVICES)
    handlers_used = [f.notifies for f in FILES.values() if f.notifies] + list(OTHER_STATE.values())
    assert {handler.service for handler in handlers_used} <= services


MIGRATING = SchemaPlan("3.18.0", Schema("a", "z", True, 3), Schema("b", "b", True, 0))


def test_a_migration_is_preceded_by_a_backup_whose_restore_a_failed_switch_names():
    values = record_bootstrap(Deployment(**BASE)).values
    record = BackupRecord(
        id="20261129T220000Z", method="pg_dump", finished="2026-11-29T22:00:05Z",
        mlflow_version="3.17.2", runs=4, objects=9, bytes=1024,
        location="s3://b/p/.kit-backups/20261129T220000Z",
        restore_command="fab restore --from 20261129T220000Z --settings onprem.yaml",
    )  # fmt: skip
    previous = Environment("/opt/mlflow/envs/fedcba9876543210")
    recording = FailingPlay(
        {**values, "schema check": MIGRATING, "backup before migration": record,
         "activate environment": previous},
        "health gate",
    )  # fmt: skip
    with pytest.raises(RemoteError):
        plays.bootstrap(recording, Deployment(**BASE), "--settings onprem.yaml")
    names = [name for name, _f, _a in recording.steps]
    assert names[names.index("configuration files") + 1 :][:2] == [
        "backup before migration",
        "schema migration",
    ]
    assert recording.args("backup before migration") == (
        Deployment(**BASE),
        "--settings onprem.yaml",
    )
    assert recording.args("roll back") == (recording.args("mlflow servers")[0], previous,
                                          record.restore_command,
                                          recording.args("activate environment")[0])  # fmt: skip


def test_an_empty_database_is_not_backed_up():
    values = record_bootstrap(Deployment(**BASE)).values
    empty = SchemaPlan("3.17.2", Schema(None, "a", True, -1), Schema(None, "b", True, -1))
    recording = RecordingPlay({**values, "schema check": empty})
    plays.bootstrap(recording, Deployment(**BASE))
    assert "backup before migration" not in [name for name, _f, _a in recording.steps]
