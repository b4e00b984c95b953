"""The restore drill: back up, lose the database and the artifacts, restore, read it all back."""

from __future__ import annotations

import re
import time

import pytest

from provisioning.layout import PATHS
from tests.e2e.kit import fab, serving_copy, write_settings
from tests.e2e.test_bootstrap import log_everything
from tests.localcloud.services import ARTIFACT_PREFIX, BUCKET, DB_NAME, DB_USER

#: The restore drill's new server's own, empty database.
FRESH_DB = f"{DB_NAME}_fresh"

pytestmark = pytest.mark.e2e


def log_runs(name: str) -> dict:
    """Runs with params, metric histories and artifacts, and a model with two versions."""
    import mlflow

    first = log_everything(name)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = [first["run_id"]]
    for i in range(3):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_params({"i": i, "kind": "drill"})
            for step in range(4):
                mlflow.log_metric("acc", i + step / 10, step=step)
            mlflow.log_text(f"run {i} notes", "notes/run.txt")
            mlflow.log_dict({"i": i}, "data/config.json")
        runs.append(run.info.run_id)
    client.create_model_version(name, f"runs:/{runs[1]}/data", runs[1])
    return {**first, "runs": runs, "experiment": experiment}


def snapshot(logged: dict) -> dict:
    """Everything logged, as the server answers it now."""
    import mlflow

    client = mlflow.MlflowClient()
    seen = {}
    for run_id in logged["runs"]:
        run = client.get_run(run_id)
        metrics = {
            key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in run.data.metrics
        }
        artifacts = {}
        for top in client.list_artifacts(run_id):
            items = client.list_artifacts(run_id, top.path) if top.is_dir else [top]
            for item in items:
                if not item.is_dir:
                    artifacts[item.path] = (
                        mlflow.artifacts.load_text(f"runs:/{run_id}/{item.path}")
                        if item.path.endswith((".txt", ".json"))
                        else item.file_size
                    )
        seen[run_id] = {"params": run.data.params, "metrics": metrics, "artifacts": artifacts}
    versions = client.search_model_versions(f"name='{logged['name']}'")
    seen["versions"] = sorted((v.version, v.source, v.run_id) for v in versions)
    return seen


def lose_everything(deployed) -> None:
    """The database dropped (a fresh empty one in its place, as a new stack gives) and the
    bucket prefix emptied, backups apart."""
    cloud, name = deployed["cloud"], deployed["database"]
    cloud.postgres.psql(
        f"DROP DATABASE {name} WITH (FORCE);\nCREATE DATABASE {name} OWNER {DB_USER};\n"
    )
    keep = f"{ARTIFACT_PREFIX}/.kit-backups/"
    keys: list[str] = []
    if deployed["backend"] == "s3":
        s3 = cloud.s3.client()
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=ARTIFACT_PREFIX + "/"
        )
        keys = [
            o["Key"] for p in pages for o in p.get("Contents", []) if not o["Key"].startswith(keep)
        ]
        for key in keys:
            s3.delete_object(Bucket=BUCKET, Key=key)
        left = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=ARTIFACT_PREFIX + "/") for o in p.get("Contents", [])]  # fmt: skip
    else:
        bucket = cloud.gcs.client().bucket(BUCKET)
        for blob in list(bucket.list_blobs(prefix=ARTIFACT_PREFIX + "/")):
            if not blob.name.startswith(keep):
                blob.delete()
        left = [b.name for b in bucket.list_blobs(prefix=ARTIFACT_PREFIX + "/")]
    assert keys or deployed["backend"] == "gcs"
    assert all(name.startswith(keep) for name in left)


def test_restore_drill_brings_back_every_run_metric_artifact_and_model_version(
    deployed, client_env
):
    path = str(deployed["path"])
    logged = log_runs(f"drill-{deployed['backend']}")
    before = snapshot(logged)

    started = time.monotonic()
    taken = fab("backup", "--settings", path)
    backup_s = time.monotonic() - started
    backup_id = re.search(r"backup ID: (\S+)", taken.stdout).group(1)
    assert f"restore with: fab restore --from {backup_id} --settings {path}" in taken.stdout
    listed = fab("backups", "--settings", path).stdout
    assert re.search(rf"^{backup_id} .* pg_dump ", listed, re.M), listed

    lose_everything(deployed)
    import mlflow

    with pytest.raises(Exception):  # noqa: B017 - whatever the client makes of a lost database
        mlflow.MlflowClient().get_run(logged["run_id"])

    started = time.monotonic()
    restored = fab("restore", "--from", backup_id, "--settings", path, "--yes")
    restore_s = time.monotonic() - started
    assert "smoke ok" in restored.stdout, restored.stdout
    assert snapshot(logged) == before
    model = mlflow.pyfunc.load_model(f"models:/{logged['name']}/1")
    assert list(model.predict(__import__("numpy").array([[0.0], [3.0]]))) == [0, 1]
    print(f"drill ({deployed['backend']}): backup {backup_s:.1f}s, restore {restore_s:.1f}s")

    # A restore of the same backup again changes nothing in the bucket (same content in place).
    again = fab("restore", "--from", backup_id, "--settings", path, "--yes")
    assert "restore artifacts" in again.stdout
    assert snapshot(logged) == before


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_an_unknown_backup_is_refused_and_the_servers_keep_serving(deployed, client_env):
    result = fab("restore", "--from", "20000101T000000Z", "--settings", str(deployed["path"]),
                 "--yes", check=False)  # fmt: skip
    assert result.returncode == 1
    assert "no complete backup 20000101T000000Z" in result.stdout + result.stderr
    import requests

    health = requests.get(f"{client_env['url']}/health", verify=client_env["cert"], timeout=10)
    assert health.status_code == 200


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)  # s3 restores its own above
def test_a_fresh_server_restores_another_server_s_backup(
    deployed, client_env, monkeypatch, host_factory
):
    """The drill a platform team runs: a new VM with an empty database, the same bucket.

    The new VM is a copy of the gcs host without its KEK (a new VM makes its own at its
    first bootstrap) on an empty database of its own: what the restore meets on a new
    VM; only the environment's build, which the other tests prove, is not done again.
    """
    cloud = deployed["cloud"]
    logged = log_runs("fresh-server")
    before = snapshot(logged)
    taken = fab("backup", "--settings", str(deployed["path"]))
    backup_id = re.search(r"backup ID: (\S+)", taken.stdout).group(1)

    host = serving_copy(host_factory, deployed["host"])
    try:
        host.ssh(f"sudo rm {PATHS['kek']}")
        settings = cloud.deployment_settings(host, deployed["backend"], database=FRESH_DB)
        path = str(write_settings(deployed["path"].parent / "fresh.yaml", settings))
        fab("bootstrap", "--settings", path)
        restored = fab("restore", "--from", backup_id, "--settings", path, "--yes")
        assert "another KEK" in restored.stdout  # a new server made its own
        cert = deployed["path"].parent / "fresh.crt"
        cert.write_text(host.ssh("sudo cat /etc/mlflow/tls/server.crt").stdout)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://{host.address}")
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert))
        assert snapshot(logged) == before
    finally:
        host_factory.discard(host)
        cloud.postgres.drop_database(FRESH_DB)
