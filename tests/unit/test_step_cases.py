"""Every step against a strict scripted host, one case per file under tests/unit/steps/.

A case names the step (``module.function`` under provisioning.steps), its
arguments, the settings it runs with (overrides of a base deployment), the
exact transcript (each command as a prompt shows it, with the host's recorded
answer) and either the outcome or the error. Argument tokens: ``$deployment``,
``$context`` (the render context of that deployment), ``{$environment: PREFIX}``,
``{$actions: [changed items]}``, ``{$set: [...]}``, ``{$secret: VALUE}``, ``{$plan: ...}``. In answers and uploads,
``{sha256 of TEMPLATE}`` stands for the digest of that template as rendered
(``{sha256 of TEMPLATE server_ports=5001,5002 down_ports=}`` with those context
values instead; ``{sha256 of program:NAME}`` for a program of
provisioning/backups/remote), ``{config digest}`` for the digest of what the servers read, and
in commands ``{smoke script}`` (and the other SCRIPTS) for those scripts, quoted.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from provisioning import handlers, play, transport
from provisioning.backups import remote
from provisioning.render import context, render
from provisioning.settings import Deployment, Secret
from provisioning.steps.admin import USER_UPDATE_SCRIPT
from provisioning.steps.conda import RECORD_SCRIPT, Environment
from provisioning.steps.health import SMOKE_SCRIPT
from provisioning.steps.oidc import ADMIN_SCRIPT
from provisioning.steps.permissions import APPLY_SCRIPT, READ_SCRIPT
from provisioning.steps.schema import CHECK_SCRIPT, Schema, SchemaPlan
from tests.unit.double import ScriptedConnection

CASES_DIR = Path(__file__).parent / "steps"
CASES = sorted(CASES_DIR.rglob("*.yaml"))
BASE = {
    "host": "203.0.113.10",
    "ssh_user": "admin",
    "cloud": "gcp",
    "environment": "dev",
    "backend_store_uri": "postgresql+psycopg2://mlflow:p%40ss@10.0.0.5:5432/mlflow?sslmode=require",
    "artifacts_destination": "gs://bucket/mlflow",
    "admin_password": "a-long-admin-password",
}
PORTS = [5001, 5002]
FLASK_KEY = "k" * 64
KEK = "p" * 48
ERRORS = {"PreflightError": transport.PreflightError, "RemoteError": transport.RemoteError}
#: Scripts a case names instead of spelling them: ``{smoke script}`` in a command.
SCRIPTS = {
    "smoke script": SMOKE_SCRIPT,
    "user update script": USER_UPDATE_SCRIPT,
    "schema check script": CHECK_SCRIPT,
    "schema record script": RECORD_SCRIPT,
    "oidc admin script": ADMIN_SCRIPT,
    "permissions read script": READ_SCRIPT,
    "permissions apply script": APPLY_SCRIPT,
}
_SHA = re.compile(r"\{sha256 of ([^}\s]+)((?: \w+=[\d,]*)*)\}")


def deployment_for(case: dict) -> Deployment:
    """The base deployment with the case's settings; ``{cases}`` in a value is this folder."""
    settings = {
        k: v.replace("{cases}", str(CASES_DIR)) if isinstance(v, str) else v
        for k, v in case.get("settings", {}).items()
    }
    return Deployment(**{**BASE, **settings})


def context_for(deployment: Deployment) -> dict:
    ports = PORTS[: deployment.server_instances or len(PORTS)]
    return context(
        deployment,
        server_ports=ports,
        flask_secret_key=FLASK_KEY,
        job_execution=False,
        kek_passphrase=KEK,
    )


def resolve(value, deployment: Deployment, ctx: dict):
    if value == "$deployment":
        return deployment
    if value == "$context":
        return ctx
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "$environment":
            return Environment(inner)
        if key == "$actions":
            return handlers.actions_for(inner)
        if key == "$set":
            return frozenset(inner)
        if key == "$secret":
            return Secret(inner)
        if key == "$plan":
            return SchemaPlan(
                inner["mlflow"],
                Schema(**inner["tracking"]),
                Schema(**inner["auth"]),
                inner.get("user_trigger", True),
            )
    if isinstance(value, list):
        return [resolve(v, deployment, ctx) for v in value]
    return value


def expand(transcript: list[dict], ctx: dict) -> list[dict]:
    def digest(match: re.Match) -> str:
        if match.group(1).startswith("program:"):
            name = match.group(1).removeprefix("program:")
            return hashlib.sha256(remote.source(name)).hexdigest()
        values = dict(ctx)
        for setting in match.group(2).split():
            key, _, numbers = setting.partition("=")
            values[key] = [int(n) for n in numbers.split(",") if n]
        return hashlib.sha256(render(match.group(1), values).encode()).hexdigest()

    out = []
    for entry in transcript:
        entry = dict(entry)
        for key in ("stdout", "sha256"):
            if isinstance(entry.get(key), str):
                entry[key] = _SHA.sub(digest, entry[key]).replace(
                    "{config digest}", ctx["config_digest"]
                )
        if "run" in entry:
            for name, script in SCRIPTS.items():
                entry["run"] = entry["run"].replace("{" + name + "}", shlex.quote(script))
        out.append(entry)
    return out


def step_function(name: str):
    module, _, function = name.rpartition(".")
    return getattr(importlib.import_module(f"provisioning.steps.{module}"), function)


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(CASES_DIR)) for p in CASES])
def test_step_case(path: Path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _seconds: None)  # the host's answers move time on
    case = yaml.safe_load(path.read_text())
    assert set(case) <= {"step", "args", "settings", "transcript", "outcome", "error"}, path
    deployment = deployment_for(case)
    ctx = context_for(deployment)
    conn = ScriptedConnection(expand(case["transcript"], ctx))
    host = transport.Host(conn, step=case["step"])
    function = step_function(case["step"])
    args = [resolve(a, deployment, ctx) for a in case.get("args", [])]

    if "error" in case:
        with pytest.raises(ERRORS[case["error"]["type"]]) as caught:
            function(host, *args)
        for text in case["error"]["contains"]:
            assert text in str(caught.value)
    else:
        outcome = function(host, *args)
        assert isinstance(outcome, play.Outcome)
        expected = case["outcome"]
        assert outcome.changed == expected["changed"]
        assert outcome.detail == expected["detail"].replace("{cases}", str(CASES_DIR))
        if "value" in expected:
            assert outcome.value == resolve(expected["value"], deployment, ctx)
    conn.assert_done()


def test_every_step_has_a_case_that_changes_nothing_and_one_that_changes():
    seen: dict[str, set[bool]] = {}
    for path in CASES:
        case = yaml.safe_load(path.read_text())
        if "outcome" in case:
            seen.setdefault(case["step"], set()).add(case["outcome"]["changed"])
    # Some steps only read (preflight, the admin password and health checks); some always act.
    reading = {
        "preflight.check",
        "admin.check_password",
        "health.gate",
        "schema.check",
        "oidc.check_provider",
        "models.room",
        "models.resolve",
        "models.check",
        "drain.rejoin",
    }
    acting = {
        "servers.restart_all",
        "servers.roll_back",
        "admin.change_password",
        "secrets.rotate_kek",
        "drain.drain",
    }
    converging = set(seen) - reading - acting
    assert {step: seen[step] for step in converging if seen[step] != {True, False}} == {}
