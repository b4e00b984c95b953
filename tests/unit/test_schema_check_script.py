"""Bootstrap's schema check script reads the same Alembic histories MLflow migrates with:
from the record the environment's build writes (without importing MLflow), or, for an
environment built before that record, from MLflow's migration scripts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import mlflow
import pytest
from alembic.script import ScriptDirectory
from mlflow.server.auth.db.utils import _get_alembic_config as auth_config
from mlflow.store.db.utils import _get_alembic_config as tracking_config

from provisioning.steps.conda import RECORD_SCRIPT
from provisioning.steps.schema import CHECK_SCRIPT, parse_plan

#: Printed after the plan: which MLflow modules the check imported.
IMPORTED = "\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow')))\n"


def check(uri: str, histories) -> tuple:
    given = json.dumps({"uri": uri, "histories": str(histories)})
    result = subprocess.run([sys.executable, "-c", CHECK_SCRIPT + IMPORTED], input=given,
                            capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    plan_line, imported = result.stdout.strip().splitlines()[-2:]
    return parse_plan(plan_line), json.loads(imported)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The histories file as an environment's build writes it (RECORD_SCRIPT, for real)."""
    path = tmp_path_factory.mktemp("env") / "kit-schema-histories.json"
    subprocess.run([sys.executable, "-c", RECORD_SCRIPT, str(path)], check=True, timeout=120)
    return path


def scripts(uri: str) -> dict[str, ScriptDirectory]:
    return {
        name: ScriptDirectory.from_config(config(uri))
        for name, config in (("tracking", tracking_config), ("auth", auth_config))
    }


def test_with_the_record_the_check_imports_no_mlflow_and_finds_its_heads(tmp_path, recorded):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    plan, imported = check(uri, recorded)
    heads = {name: script.get_current_head() for name, script in scripts(uri).items()}
    assert (plan.tracking.head, plan.auth.head) == (heads["tracking"], heads["auth"])
    assert plan.mlflow_version == mlflow.__version__
    assert plan.empty and plan.tracking.pending == plan.auth.pending == -1
    assert imported == []


def test_without_the_record_the_check_reads_the_scripts_but_not_the_server(tmp_path, recorded):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    plan, imported = check(uri, tmp_path / "built-before-the-record.json")
    assert plan == check(uri, recorded)[0]
    # MLflow (the migration scripts import it), but not Flask's app, handlers or FastAPI.
    assert "mlflow" in imported
    server = [m for m in imported if m.startswith("mlflow.server")]
    assert [m for m in server if not m.startswith("mlflow.server.auth")] == []


def stamp(db, table: str, revision: str) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (version_num VARCHAR(32))")
        connection.execute(f"DELETE FROM {table}")  # noqa: S608 - the test's own names
        connection.execute(f"INSERT INTO {table} VALUES (?)", (revision,))  # noqa: S608


def test_an_older_schema_counts_the_migrations_alembic_would_run(tmp_path, recorded):
    db = tmp_path / "old.db"
    uri = f"sqlite:///{db}"
    histories = scripts(uri)
    # A tracking schema some releases back, the auth schema at its first revision.
    tracking = list(histories["tracking"].walk_revisions())[7].revision
    auth = list(histories["auth"].walk_revisions())[-1].revision
    stamp(db, "alembic_version", tracking)
    stamp(db, "alembic_version_auth", auth)
    expected = {
        name: len([r for r in script.iterate_revisions(script.get_current_head(), current)
                   if r.revision != current])
        for (name, script), current in zip(histories.items(), (tracking, auth), strict=True)
    }  # fmt: skip
    plan, _ = check(uri, recorded)
    assert plan.tracking.pending == expected["tracking"] == 7
    assert plan.auth.pending == expected["auth"] > 0
    assert plan.migrates and plan.tracking.known and plan.auth.known
    assert check(uri, tmp_path / "none.json")[0] == plan


def test_a_revision_the_environment_does_not_know_is_a_newer_mlflows(tmp_path, recorded):
    db = tmp_path / "newer.db"
    stamp(db, "alembic_version", "f0f0f0f0f0f0")
    plan, _ = check(f"sqlite:///{db}", recorded)
    assert plan.tracking.current == "f0f0f0f0f0f0" and not plan.tracking.known
    assert plan.auth.known and plan.auth.current is None
