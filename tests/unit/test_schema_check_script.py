"""Bootstrap's schema check script reads the same Alembic histories MLflow migrates with."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
from alembic.script import ScriptDirectory
from mlflow.server.auth.db.utils import _get_alembic_config as auth_config
from mlflow.store.db.utils import _get_alembic_config as tracking_config

from provisioning.steps.schema import CHECK_SCRIPT, parse_plan


def test_the_check_finds_mlflows_own_heads_without_importing_the_server(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    probe = (
        CHECK_SCRIPT
        + "\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('mlflow.server'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], input=json.dumps({"uri": uri}),
                            capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    plan_line, server_modules = result.stdout.strip().splitlines()[-2:]
    plan = parse_plan(plan_line)
    heads = {
        name: ScriptDirectory.from_config(config(uri)).get_current_head()
        for name, config in (("tracking", tracking_config), ("auth", auth_config))
    }
    assert (plan.tracking.head, plan.auth.head) == (heads["tracking"], heads["auth"])
    assert plan.mlflow_version == mlflow.__version__
    assert plan.empty and plan.tracking.pending == plan.auth.pending == -1
    # The auth history's own package only: not Flask's app, handlers or FastAPI.
    assert [m for m in json.loads(server_modules) if not m.startswith("mlflow.server.auth")] == []
