"""Garbage collection on its timer, and /metrics behind the admin's credentials."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.e2e.kit import fab, objects_under, write_settings
from tests.localcloud.services import ARTIFACT_PREFIX

pytestmark = pytest.mark.e2e


def test_a_run_deleted_past_the_threshold_loses_its_artifacts_when_the_timer_fires(
    deployed, client_env, tmp_path
):
    import mlflow

    host = deployed["host"]
    # Time made to pass: a 5 s threshold, a timer firing every 10 s.
    settings = dict(deployed["settings"], gc_older_than="5s", gc_schedule="*:*:0/10")
    path = str(write_settings(tmp_path / "gc.yaml", settings))
    try:
        fab("bootstrap", "--settings", path)
        mlflow.set_experiment(f"gc-{deployed['backend']}")
        with mlflow.start_run() as run:
            mlflow.log_text("to be collected", "junk/file.txt")
            mlflow.log_metric("m", 1.0)
        experiment = run.info.experiment_id
        prefix = f"{ARTIFACT_PREFIX}/{experiment}/{run.info.run_id}/"
        assert objects_under(deployed, prefix)
        mlflow.MlflowClient().delete_run(run.info.run_id)

        deadline = time.monotonic() + 90
        while objects_under(deployed, prefix):
            assert time.monotonic() < deadline, "the deleted run's artifacts are still there"
            time.sleep(2)
        with pytest.raises(mlflow.exceptions.MlflowException):
            mlflow.MlflowClient().get_run(run.info.run_id)
        last = json.loads(host.ssh("sudo cat /var/lib/mlflow/gc-last.json").stdout)
        assert last["result"] == "success" and last["older_than"] == "5s"
        status = fab("status", "--settings", path).stdout
        assert "gc last run" in status and "success at" in status, status
        assert "*:*:0/10" in status
    finally:
        fab("bootstrap", "--settings", str(deployed["path"]))
    timer = host.ssh("systemctl show -P TimersCalendar mlflow-gc.timer").stdout
    assert "daily" in timer or "00:00:00" in timer, timer


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_metrics_need_the_admin_and_show_each_instance_s_requests(deployed, client_env):
    url = f"{client_env['url']}/metrics"
    cert = client_env["cert"]
    assert requests.get(url, verify=cert, timeout=30).status_code == 401
    wrong = requests.get(url, verify=cert, timeout=30, auth=("admin", "not-the-password"))
    assert wrong.status_code == 401
    admin = (client_env["username"], client_env["password"])
    for _ in range(10):  # traffic for every instance to count
        requests.get(f"{client_env['url']}/api/2.0/mlflow/experiments/search?max_results=1",
                     verify=cert, timeout=30, auth=admin)  # fmt: skip
    answer = requests.get(url, verify=cert, timeout=30, auth=admin)
    assert answer.status_code == 200
    text = answer.text
    ports = sorted(
        int(line.split('instance_port="')[1].split('"')[0])
        for line in text.splitlines()
        if line.startswith("mlflow_kit_instance_up{") and line.endswith(" 1.0")
    )
    upstream = deployed["host"].ssh("cat /etc/nginx/mlflow-upstream.conf").stdout
    assert ports and all(f"127.0.0.1:{p} " in upstream for p in ports)
    served = {
        int(line.split('instance_port="')[1].split('"')[0])
        for line in text.splitlines()
        if line.startswith("mlflow_http_request_total{") and float(line.split()[-1]) > 0
    }
    assert served and served <= set(ports), text[:2000]
    assert "mlflow_kit_runs{" in text and "mlflow_kit_database_bytes " in text

    status = fab("status", "--settings", str(deployed["path"])).stdout
    assert "requests per instance" in status and "registered models" in status, status

    # A user who is not the admin may use the API but not read the metrics.
    requests.post(f"{client_env['url']}/api/2.0/mlflow/users/create", verify=cert, timeout=30,
                  auth=admin, json={"username": "reader", "password": "reader-password-1"})  # fmt: skip
    other = requests.get(url, verify=cert, timeout=30, auth=("reader", "reader-password-1"))
    assert other.status_code == 403
