"""Permissions as code under basic auth, against MLflow's own basic-auth server.

A real ``mlflow server --app-name basic-auth`` (SQLite, loopback, no TLS) answers the
scripts the permissions step runs on the VM (READ_SCRIPT, APPLY_SCRIPT, LIST_SCRIPT, with
their API address pointed at it), and ``plan`` decides between them, as on a host: a grant
is made, a second pass changes nothing, a dropped grant goes and one made by hand stays.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from provisioning.steps import permissions

pytestmark = pytest.mark.service

ADMIN = ("admin", "admin-password-1234")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("basic-auth")
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {
        **os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
    }  # fmt: skip
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen(
        [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--app-name", "basic-auth", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        for name in ("churn", "forecast"):
            created = requests.post(f"{url}/api/2.0/mlflow/experiments/create", auth=ADMIN,
                                    json={"name": name}, timeout=30)  # fmt: skip
            assert created.status_code == 200, created.text
        for user in ("alice", "bob"):
            created = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=ADMIN,
                                    json={"username": user, "password": f"{user}-password-123"},
                                    timeout=30)  # fmt: skip
            assert created.status_code == 200, created.text
        yield {"url": url, "folder": folder}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def run(server: dict, script: str, given: dict) -> dict:
    given = {
        "username": ADMIN[0],
        "password": ADMIN[1],
        "mode": "basic",
        "api": server["url"],
        **given,
    }
    result = subprocess.run([sys.executable, "-c", script], input=json.dumps(given),
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def converge(server: dict, want: dict) -> list:
    """One pass of the step, as it runs on a host; the ops it applied."""
    record = server["folder"] / "record.json"
    owned = {tuple(k) for k in json.loads(record.read_text())} if record.exists() else set()
    keys = set(want) | owned
    given = {
        "experiments": sorted({k[3] for k in keys if k[2] == "experiments"}),
        "models": sorted({k[3] for k in keys if k[2] == "registered_models"}),
        "users": sorted({k[1] for k in keys if k[0] == "user"}),
    }
    state = run(server, permissions.READ_SCRIPT, given)
    current = {tuple(g[:4]): g[4] for g in state["grants"]}
    steps = permissions.plan(
        want, current, owned, state, mode="basic", exclusive=False, admin="admin"
    )
    if steps.ops or steps.forget:
        run(server, permissions.APPLY_SCRIPT, {**given, "ops": steps.ops, "owned": sorted(owned),
            "forget": steps.forget, "experiments": state["experiments"], "record_file": str(record)})  # fmt: skip
    return steps.ops


def can_log(server: dict, user: str, experiment: str) -> int:
    found = requests.get(f"{server['url']}/api/2.0/mlflow/experiments/get-by-name", auth=ADMIN,
                         params={"experiment_name": experiment}, timeout=30)  # fmt: skip
    response = requests.post(
        f"{server['url']}/api/2.0/mlflow/runs/create", auth=(user, f"{user}-password-123"),
        json={"experiment_id": found.json()["experiment"]["experiment_id"]}, timeout=30,
    )  # fmt: skip
    return response.status_code


def test_grants_converge_through_mlflows_basic_auth_api(server):
    alice_edit = ("user", "alice", "experiments", "churn")
    bob_edit = ("user", "bob", "experiments", "forecast")
    assert can_log(server, "alice", "churn") == 403  # the default is READ
    assert converge(server, {alice_edit: "EDIT", bob_edit: "EDIT"}) == [
        ["create", *alice_edit, "EDIT"],
        ["create", *bob_edit, "EDIT"],
    ]
    assert can_log(server, "alice", "churn") == 200
    assert converge(server, {alice_edit: "EDIT", bob_edit: "EDIT"}) == []
    assert converge(server, {alice_edit: "MANAGE", bob_edit: "EDIT"}) == [
        ["update", *alice_edit, "MANAGE"]
    ]
    # Dropped from the settings: the kit's grant goes.
    assert converge(server, {alice_edit: "MANAGE"}) == [["delete", *bob_edit, None]]
    assert can_log(server, "bob", "forecast") == 403
    rows = run(server, permissions.LIST_SCRIPT, {})["rows"]
    assert ["user alice", "experiment", "1", "MANAGE"] in [row[:4] for row in rows]
    assert ["user admin", "everything", "*", "admin"] in [row[:4] for row in rows]
