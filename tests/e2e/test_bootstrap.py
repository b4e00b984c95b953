"""fab bootstrap on a fresh local host, for real: the user's whole journey and its faults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from provisioning.artifact_streaming import kit_auth
from tests.e2e.kit import (
    REPO,
    fab,
    kill_and_wait_back,
    main_pids,
    uncompiled_modules,
    wait_healthy,
    write_settings,
)

pytestmark = pytest.mark.e2e


def test_first_bootstrap_reports_its_steps(deployed):
    out = deployed["first"].stdout
    # Its first contact came during the first boot: it waited for apt's locks, not failed.
    first_boot = deployed["interrupted"] + out
    assert "apt's locks held by unattended-upgr" in first_boot, first_boot
    for step in ("preflight", "conda environment", "schema migration", "nginx", "health gate"):
        assert step in out
    assert "smoke ok" in out
    assert f"tracking URL: https://{deployed['host'].address}" in out
    # Every module is byte-compiled once, at the build: the servers cannot write a .pyc.
    assert uncompiled_modules(deployed["host"]) == []


def test_second_bootstrap_changes_nothing_and_restarts_nothing(deployed):
    before = main_pids(deployed["host"])
    again = fab("bootstrap", "--settings", str(deployed["path"]))
    assert " 0 changed" in again.stdout, again.stdout
    assert main_pids(deployed["host"]) == before
    assert len(before) >= 1


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_every_instance_listens_for_user_changes(deployed):
    """kit_auth: each instance holds LISTEN on the database (over its verify-full TLS), the
    trigger it listens to installed by the first bootstrap's mlflow-migrate."""
    host, postgres = deployed["host"], deployed["cloud"].postgres
    instances = main_pids(host)
    listening = postgres.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "  # noqa: S608
        f"'{kit_auth.APPLICATION_NAME}' AND datname = '{deployed['database']}';"
    ).strip()
    assert int(listening) == len(instances) >= 1
    trigger = postgres.psql(
        f"\\connect {deployed['database']}\nSELECT tgenabled FROM pg_trigger "  # noqa: S608
        f"WHERE tgname = '{kit_auth.TRIGGER}';\n"
    )
    assert trigger.strip().splitlines()[-1] == "O"  # enabled, for changes by any session
    journal = host.ssh("sudo journalctl --no-pager -o cat -u 'mlflow-server@*'").stdout
    assert journal.count(kit_auth.LISTENING_MESSAGE) >= len(instances)
    status = fab("status", "--settings", str(deployed["path"])).stdout
    heard = re.findall(r"^\s*user changes (\d+)\s+heard at once", status, re.M)
    assert len(heard) == len(instances), status


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_api_without_credentials_answers_401(deployed, client_env):
    response = requests.get(
        f"{client_env['url']}/api/2.0/mlflow/experiments/search?max_results=1",
        verify=client_env["cert"],
        timeout=30,
    )
    assert response.status_code == 401
    plain = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            f"http://{deployed['host'].address}:5001/health",
        ],
        capture_output=True,
        text=True,
    )
    assert plain.stdout != "200"  # the servers listen on loopback only


def log_everything(name: str) -> dict:
    import mlflow
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(name)
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    with mlflow.start_run() as run:
        mlflow.log_param("C", 1.0)
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_text("hello artifact", "notes/hello.txt")
        model = LogisticRegression().fit(x, y)
        # Requirements given, not inferred: inferring them loads the model in a subprocess
        # on this machine (10-40 s here) and involves no server. The model-serving tests
        # (test_models.py), which build an environment from them, let MLflow infer them.
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, input_example=x[:1],
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__}"],
        )  # fmt: skip
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "name": name}


def read_back(logged: dict) -> None:
    import mlflow
    import numpy as np

    client = mlflow.MlflowClient()
    run = client.get_run(logged["run_id"])
    assert run.data.params["C"] == "1.0"
    history = client.get_metric_history(logged["run_id"], "loss")
    assert [round(m.value, 3) for m in sorted(history, key=lambda m: m.step)] == [
        1.0,
        0.5,
        0.333,
        0.25,
        0.2,
    ]
    text = mlflow.artifacts.load_text(f"runs:/{logged['run_id']}/notes/hello.txt")
    assert text == "hello artifact"
    versions = client.search_model_versions(f"name='{logged['name']}'")
    assert [v.version for v in versions] == ["1"]
    model = mlflow.pyfunc.load_model(f"models:/{logged['name']}/1")
    assert list(model.predict(np.array([[0.0], [3.0]]))) == [0, 1]


def test_client_logs_registers_loads_and_survives_faults(deployed, client_env):
    host, cloud = deployed["host"], deployed["cloud"]
    logged = log_everything(f"e2e-{deployed['backend']}")
    read_back(logged)

    # kill -9 of a server's main process, then of its uvicorn worker (after which the main
    # process exits 0): systemd brings the instance back within 15 s either way.
    unit = sorted(main_pids(host))[0]
    kill_and_wait_back(host, unit, "main")
    kill_and_wait_back(host, unit, "worker")
    wait_healthy(client_env, 60)
    read_back(logged)

    # A reboot: everything comes back without any command.
    host.reboot()
    wait_healthy(client_env, 120)
    read_back(logged)

    # The database restarts under the server: it reconnects by itself.
    cloud.postgres.restart()
    wait_healthy(client_env, 60)
    read_back(logged)


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_secrets_stay_out_of_process_lists_logs_and_readable_files(deployed):
    host, settings = deployed["host"], deployed["settings"]
    from urllib.parse import unquote, urlsplit

    db_password = unquote(urlsplit(settings["backend_store_uri"]).password)
    secrets_ = [
        db_password,
        settings["admin_password"],
        *settings.get("storage_secret_env", {}).values(),
    ]
    assert host.ssh("sudo stat -c '%a %U %G' /etc/mlflow/mlflow.env").stdout.split() == [
        "600",
        "mlflow",
        "mlflow",
    ]
    assert host.ssh("sudo stat -c '%a %U' /etc/mlflow/basic_auth.ini").stdout.split() == [
        "600",
        "mlflow",
    ]
    processes = host.ssh("ps -eo args").stdout
    journal = host.ssh("sudo journalctl --no-pager -o cat").stdout
    # World-readable files written since the host was created: none may hold a secret.
    # The patterns travel on stdin into a 0600 file, never on a command line.
    readable = host.ssh(
        "sudo sh -c 'umask 077; cat > /root/kit-patterns; find / -xdev -type f -perm -o=r "
        '-newer /etc/hostname -size -1M -not -path "/proc/*" -print0 2>/dev/null '
        "| xargs -0 -r grep -l -F -f /root/kit-patterns 2>/dev/null; rm -f /root/kit-patterns; true'",
        input="\n".join(secrets_) + "\n",
    ).stdout
    output = deployed["first"].stdout + deployed["first"].stderr
    for secret in secrets_:
        assert secret not in processes
        assert secret not in journal
        assert secret not in output
    assert readable.strip() == ""


def closed_port_on_the_services_address(settings: dict) -> dict:
    """The database moved to a port nothing listens on (on the local cloud's own address)."""
    from urllib.parse import urlsplit

    from tests.localcloud.procs import free_port

    netloc = urlsplit(settings["backend_store_uri"]).netloc.rsplit("@", 1)[1]
    address = netloc.rsplit(":", 1)[0]
    closed = f"{address}:{free_port(address)}"
    settings["backend_store_uri"] = settings["backend_store_uri"].replace(netloc, closed)
    settings["expected"] = f"the database at {closed} is not reachable"
    return settings


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.pop("backend_store_uri"), "backend_store_uri"),
        (
            lambda s: s.update(backend_store_uri="postgresql+psycopg2://mlflow@:notaport/mlflow"),
            "backend_store_uri",
        ),
        (closed_port_on_the_services_address, None),
    ],
    ids=["missing-key", "malformed-uri", "unreachable-database"],
)
def test_bad_settings_fail_before_changing_the_host(
    local_cloud, fresh_host, tmp_path, change, expected
):
    settings = local_cloud.deployment_settings(fresh_host, "s3")
    change(settings)
    expected = settings.pop("expected", expected)
    path = write_settings(tmp_path / "bad.yaml", settings)
    before = fresh_host.ssh(
        "sudo find /etc /opt /var/lib -xdev -newer /etc/hostname 2>/dev/null | sort"
    ).stdout

    result = fab("bootstrap", "--settings", str(path), check=False, timeout=300)

    assert result.returncode != 0
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr
    after = fresh_host.ssh(
        "sudo find /etc /opt /var/lib -xdev -newer /etc/hostname 2>/dev/null | sort"
    ).stdout
    assert after == before
    assert fresh_host.ssh("id mlflow >/dev/null 2>&1 && echo yes || echo no").stdout.strip() == "no"


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_day_two_tasks_status_logs_and_restart(deployed):
    path = str(deployed["path"])
    status = fab("status", "--settings", path).stdout
    assert "5001:active" in status
    assert "3.17.2" in status
    assert re.search(r"^\s*/health via nginx\s+200$", status, re.M), status
    assert "the database" in status and "reachable" in status and "UNREACHABLE" not in status

    logs = fab("logs", "--settings", path, "--lines", "5").stdout
    assert "mlflow" in logs.lower() or "uvicorn" in logs.lower()

    before = main_pids(deployed["host"])
    restarted = fab("restart", "--settings", path).stdout
    assert "smoke ok" in restarted
    after = main_pids(deployed["host"])
    assert set(after) == set(before)
    assert all(after[unit] != before[unit] for unit in before)


def test_the_same_deployment_from_stack_outputs_changes_nothing(deployed, tmp_path):
    """``fab bootstrap --stack`` reads the outputs through the pulumi CLI (a stand-in here)."""
    settings = deployed["settings"]
    outputs = {
        "cloud": settings["cloud"],
        "host": settings["host"],
        "ssh_user": settings["ssh_user"],
        "tracking_url": f"https://{settings['host']}",
        "backend_store_uri": settings["backend_store_uri"],
        "artifacts_destination": settings["artifacts_destination"],
        "admin_password": settings["admin_password"],
        "environment": settings["environment"],
    }
    access = {k: v for k, v in settings.items() if k not in outputs}
    state = tmp_path / "pulumi-state.json"
    state.write_text(
        json.dumps({"stacks": {"e2e": {"config": {}, "resources": 9, "outputs": outputs}}})
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = REPO / "tests/teststacks/standin_pulumi.py"
    (bin_dir / "pulumi").write_text(f'#!/bin/sh\nexec {sys.executable} {standin} "$@"\n')
    (bin_dir / "pulumi").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STANDIN_PULUMI_STATE=str(state))

    result = fab(
        "bootstrap",
        "--stack",
        "e2e",
        "--settings",
        str(write_settings(tmp_path / "access.yaml", access)),
        env=env,
    )

    assert " 0 changed" in result.stdout, result.stdout
    calls = json.loads(state.read_text())["calls"]
    assert [
        "stack",
        "output",
        "--json",
        "--show-secrets",
        "--stack",
        "e2e",
        "--non-interactive",
    ] in calls
