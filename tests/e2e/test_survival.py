"""The server stays up through what operators and hosts do to it, and loses no request.

Restarts roll one instance at a time out of nginx; an interrupted bootstrap is
finished by the next one; a dropped session's build is attached to, not
repeated; two operators never run bootstrap on one host at once.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow import MlflowClient

from tests.e2e.kit import (
    FAB,
    REPO,
    RequestLoop,
    fab,
    kill_fab_when,
    main_pids,
    write_settings,
)

pytestmark = pytest.mark.e2e


def new_run(client_env) -> str:
    client = MlflowClient()
    name = "e2e-request-loop"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    return client.create_run(experiment_id).info.run_id


def assert_lost_nothing(loop: RequestLoop, at_least: int) -> None:
    assert loop.failures == [], (
        f"{len(loop.failures)} of {loop.sent} failed ({loop.resent} sent again after a closed"
        f" keep-alive connection): {loop.failures[:5]}"
    )
    assert loop.sent >= at_least, f"only {loop.sent} requests sent"
    print(f"{loop.sent} requests, none lost; {loop.resent} sent again on a new connection")


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)  # its first bootstrap was killed
def test_a_dropped_session_s_build_is_attached_to_not_repeated(deployed):
    assert "conda environment" not in deployed["interrupted"]  # killed inside that step
    starts = (
        deployed["host"]
        .ssh(
            "sudo journalctl -o cat -u 'mlflow-kit-conda-*' | grep -c '^Started mlflow-kit-conda' || true"
        )
        .stdout.strip()
    )
    assert starts == "1", deployed["first"].stdout
    assert "policy-rc.d" not in deployed["host"].ssh("ls /usr/sbin").stdout


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_fab_restart_loses_no_request(deployed, client_env):
    before = main_pids(deployed["host"])
    with RequestLoop(client_env, new_run(client_env)) as loop:
        restarted = fab("restart", "--settings", str(deployed["path"])).stdout
        time.sleep(2)
    assert "one at a time" in restarted and "smoke ok" in restarted
    after = main_pids(deployed["host"])
    assert set(after) == set(before) and all(after[u] != before[u] for u in before)
    assert_lost_nothing(loop, 50)


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_a_configuration_change_and_an_interrupted_bootstrap_lose_no_request(
    deployed, client_env, tmp_path
):
    host, path = deployed["host"], str(deployed["path"])
    changed = dict(deployed["settings"])
    changed["storage_env"] = {**changed["storage_env"], "KIT_E2E_MARK": "changed"}
    changed_path = str(write_settings(tmp_path / "changed.yaml", changed))
    run_id = new_run(client_env)

    before = main_pids(host)
    with RequestLoop(client_env, run_id) as loop:
        out = fab("bootstrap", "--settings", changed_path).stdout
        time.sleep(2)
    assert "restarted 5001" in out, out
    after = main_pids(host)
    assert all(after[u] != before[u] for u in before)
    assert_lost_nothing(loop, 50)

    # Back to the original settings, killed once the env file is written but before any
    # instance restarts: the instances still run the changed configuration.
    kill_fab_when(["bootstrap", "--settings", path], lambda out: "configuration files" in out)
    assert "restart pending" in fab("status", "--settings", path).stdout

    with RequestLoop(client_env, run_id) as loop:
        out = fab("bootstrap", "--settings", path).stdout
        time.sleep(2)
    assert "restarted 5001" in out, out
    assert_lost_nothing(loop, 50)
    status = fab("status", "--settings", path).stdout
    assert "restart pending" not in status and "instance 5001" in status
    assert " 0 changed" in fab("bootstrap", "--settings", path).stdout


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_a_second_bootstrap_at_the_same_time_is_refused_naming_the_first(deployed):
    path = str(deployed["path"])
    first = subprocess.Popen(
        [FAB, "bootstrap", "--settings", path],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "preflight" not in line:  # the lock is taken before the first step
            line = first.stdout.readline()
            assert line, "the first bootstrap ended before its first step"
        second = fab("bootstrap", "--settings", path, check=False)
    finally:
        rest, _ = first.communicate(timeout=600)
    assert second.returncode == 1
    assert "another kit task is running there (fab bootstrap by " in second.stdout + second.stderr
    assert first.returncode == 0 and " 0 changed" in rest
    assert " 0 changed" in fab("bootstrap", "--settings", path).stdout


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_idle_gaps_longer_than_the_servers_keep_alive_lose_no_request(client_env):
    # uvicorn closes a connection idle for 5 s; nginx must never reuse one it is closing.
    with RequestLoop(client_env, new_run(client_env), pause=5.2, max_requests=12) as loop:
        deadline = time.monotonic() + 120
        while loop.sent < 12 and time.monotonic() < deadline:
            time.sleep(1)
    assert_lost_nothing(loop, 12)


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_status_shows_what_each_instance_runs(deployed):
    status = fab("status", "--settings", str(deployed["path"])).stdout
    current = deployed["host"].ssh("readlink /opt/mlflow/current").stdout.strip().rsplit("/", 1)[-1]
    for port in main_pids(deployed["host"]):
        number = port.removeprefix("mlflow-server@").removesuffix(".service")
        assert f"instance {number}" in status
    assert f"MLflow 3.17.2, env {current}, up since" in status
