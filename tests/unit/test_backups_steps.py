"""The backup steps against the strict scripted host: what runs on the VM, in order, and
that no secret is ever on a command line."""

from __future__ import annotations

import json

import pytest

from provisioning import transport
from provisioning.backups import record
from provisioning.settings import Deployment
from provisioning.steps import backup
from tests.unit.double import ScriptedConnection
from tests.unit.test_step_cases import BASE

BACKUP_ID = "20250107T031500Z"
MANIFEST = {
    "format": 1, "id": BACKUP_ID, "reason": "before migrating to MLflow 3.17.2",
    "finished": "2025-01-07T03:16:10Z", "mlflow_version": "3.17.2",
    "database": {"method": "pg_dump", "bytes": 4096, "counts": {"runs": 12}},
    "artifacts": {"destination": "gs://bucket/mlflow", "objects": 30, "bytes": 123456},
}  # fmt: skip
JOB_STATE = (
    "$ systemctl show -p ActiveState -p Result -p ExecMainStatus mlflow-kit-backup-{}.service"
)
AS_SERVER = (
    "--property=EnvironmentFile=/etc/mlflow/mlflow.env --property=User=mlflow "
    "--property=Group=mlflow --property=WorkingDirectory=/var/lib/mlflow"
)


def job_start(name: str, description: str, command: str) -> str:
    return (
        f"# systemctl reset-failed mlflow-kit-{name}.service 2>/dev/null; systemd-run "
        f"--unit=mlflow-kit-{name}.service --description='{description}' --quiet --wait "
        f"--service-type=exec --property=TimeoutStartSec=infinity {AS_SERVER} /bin/sh -c '{command}'"
    )


def host_for(transcript: list[dict]) -> tuple[transport.Host, ScriptedConnection]:
    conn = ScriptedConnection(transcript)
    return transport.Host(conn, step="backup"), conn


@pytest.fixture(autouse=True)
def fixed_id(monkeypatch):
    monkeypatch.setattr(record, "new_id", lambda: BACKUP_ID)


def test_before_migration_on_a_host_that_never_ran_a_server_saves_nothing():
    host, conn = host_for(
        [
            {
                "run": "# test -e /opt/mlflow/current/bin/python && echo yes || echo no",
                "stdout": "no\n",
            }
        ]
    )
    outcome = backup.before_migration(host, Deployment(**BASE), "--stack dev")
    assert not outcome.changed and outcome.value is None
    assert outcome.detail == "no server has run here yet: nothing to back up"
    conn.assert_done()


def test_before_migration_takes_a_backup_and_names_the_restore_command():
    program = (
        "/opt/mlflow/current/bin/python /opt/mlflow/bin/mlflow-backup create "
        f"{BACKUP_ID} --reason 'before migrating to MLflow 3.17.2'"
    )
    show = (
        f"# systemd-run --quiet --wait --pipe --collect {AS_SERVER} "
        f"/opt/mlflow/current/bin/python /opt/mlflow/bin/mlflow-backup show {BACKUP_ID}"
    )
    host, conn = host_for(
        [
            {
                "run": "# test -e /opt/mlflow/current/bin/python && echo yes || echo no",
                "stdout": "yes\n",
            },
            {
                "run": "# test -e /opt/mlflow/bin/mlflow-backup && echo yes || echo no",
                "stdout": "yes\n",
            },
            {
                "run": JOB_STATE.format(BACKUP_ID),
                "stdout": "ActiveState=inactive\nResult=success\n",
            },
            {
                "run": job_start(
                    f"backup-{BACKUP_ID}",
                    f"MLflow backup {BACKUP_ID}",
                    program.replace("'", "'\"'\"'"),
                )
            },  # fmt: skip
            {"run": show, "stdout": "mlflow-backup: progress\n" + json.dumps(MANIFEST) + "\n"},
        ]
    )
    outcome = backup.before_migration(host, Deployment(**BASE), "--stack dev")
    conn.assert_done()
    taken = outcome.value
    assert outcome.changed
    assert taken.restore_command == f"fab restore --from {BACKUP_ID} --stack dev"
    assert taken.location == f"gs://bucket/mlflow/.kit-backups/{BACKUP_ID}"
    assert (taken.method, taken.runs, taken.objects) == ("pg_dump", 12, 30)
    assert outcome.detail == taken.summary()
    # Nothing secret on any command line: the program reads the env file itself.
    secret = Deployment(**BASE).backend_store_uri.reveal()
    for shown in conn.ran:
        assert (
            "p%40ss" not in shown and "a-long-admin-password" not in shown and secret not in shown
        )


def test_a_backup_of_a_newer_mlflow_is_refused_before_anything_stops():
    newer = dict(MANIFEST, mlflow_version="3.18.0")
    show = (
        f"# systemd-run --quiet --wait --pipe --collect {AS_SERVER} "
        f"/opt/mlflow/current/bin/python /opt/mlflow/bin/mlflow-backup show {BACKUP_ID}"
    )
    host, conn = host_for(
        [
            {"run": show, "stdout": json.dumps(newer) + "\n"},
            {"run": "$ ls -d /opt/mlflow/envs/*/lib/python3*/site-packages/mlflow-*.dist-info "
                    "2>/dev/null || true",
             "stdout": "/opt/mlflow/envs/abc/lib/python3.11/site-packages/mlflow-3.17.2.dist-info\n"},
            {"run": "# readlink /opt/mlflow/current || true", "stdout": "/opt/mlflow/envs/abc\n"},
        ]
    )  # fmt: skip
    with pytest.raises(transport.PreflightError, match="MLflow 3.18.0, newer than the 3.17.2"):
        backup.manifest(host, Deployment(**BASE), BACKUP_ID)
    conn.assert_done()


def test_a_restore_stops_every_instance_gc_and_metrics_together():
    from provisioning import facts

    host, conn = host_for(
        [
            {"run": f"# {facts.INSTANCES.command}",
             "stdout": "mlflow-server@5001.service active 11 - -\n"
                       "mlflow-server@5002.service active 12 - -\n"},
            {"run": "# systemctl stop mlflow-server@5001.service mlflow-server@5002.service "
                    "mlflow-gc.timer mlflow-gc.service mlflow-metrics.service"},
        ]
    )  # fmt: skip
    outcome = backup.stop_serving(host)
    assert outcome.value == [5001, 5002]
    conn.assert_done()


def test_a_backup_under_another_kek_is_restored_with_a_warning():
    show = (
        f"# systemd-run --quiet --wait --pipe --collect {AS_SERVER} "
        f"/opt/mlflow/current/bin/python /opt/mlflow/bin/mlflow-backup show {BACKUP_ID}"
    )
    from provisioning import facts

    older = dict(MANIFEST, mlflow_version="3.16.0", kek_fingerprint="sha256:0123456789abcdef")
    host, conn = host_for(
        [
            {"run": show, "stdout": json.dumps(older) + "\n"},
            {"run": "$ ls -d /opt/mlflow/envs/*/lib/python3*/site-packages/mlflow-*.dist-info "
                    "2>/dev/null || true",
             "stdout": "/opt/mlflow/envs/abc/lib/python3.11/site-packages/mlflow-3.17.2.dist-info\n"},
            {"run": "# readlink /opt/mlflow/current || true", "stdout": "/opt/mlflow/envs/abc\n"},
            {"run": f"# {facts.kek_fingerprint('/etc/mlflow/kek').command}",
             "stdout": "sha256:fedcba9876543210\n"},
        ]
    )  # fmt: skip
    notes = []
    host.note = notes.append
    outcome = backup.manifest(host, Deployment(**BASE), BACKUP_ID)
    conn.assert_done()
    assert outcome.value == older and not outcome.changed
    assert outcome.detail == f"{BACKUP_ID}: 12 runs, 30 objects, MLflow 3.16.0"
    assert notes and "another KEK" in notes[0]


def test_status_shows_gc_s_last_result_also_while_it_runs_again():
    from provisioning.steps import gc

    last = {"result": "success", "finished": "2025-01-07T03:00:04Z", "runs": 3, "logged_models": 1}
    host, conn = host_for(
        [
            {"run": "$ systemctl show -p ActiveState -p NextElapseUSecRealtime mlflow-gc.timer",
             "stdout": "ActiveState=active\nNextElapseUSecRealtime=\n"},
            {"run": "# cat /var/lib/mlflow/gc-last.json 2>/dev/null || true",
             "stdout": json.dumps(last)},
            {"run": "$ systemctl show -p ActiveState mlflow-gc.service",
             "stdout": "ActiveState=activating\n"},
        ]
    )  # fmt: skip
    rows = dict(gc.status_rows(host, Deployment(**BASE)))
    conn.assert_done()
    assert rows["gc timer"] == "active, daily, older than 30d; next -"
    assert rows["gc last run"] == (
        "success at 2025-01-07T03:00:04Z: 3 run(s), 1 logged model(s) removed (running again now)"
    )


def test_status_summarizes_requests_per_instance_and_the_counts():
    from provisioning import facts
    from provisioning.steps import metrics

    exposition = "\n".join(
        [
            'mlflow_http_request_total{method="GET",status="200",instance_port="5001"} 7.0',
            'mlflow_http_request_total{method="POST",status="200",instance_port="5001"} 3.0',
            'mlflow_http_request_total{method="GET",status="200",instance_port="5002"} 4.0',
            'mlflow_kit_instance_up{instance_port="5001"} 1.0',
            'mlflow_kit_instance_up{instance_port="5002"} 1.0',
            'mlflow_kit_experiments{lifecycle_stage="active"} 2.0',
            'mlflow_kit_runs{lifecycle_stage="active"} 10.0',
            'mlflow_kit_runs{lifecycle_stage="deleted"} 1.0',
            "mlflow_kit_registered_models 1.0",
            "mlflow_kit_model_versions 2.0",
            "mlflow_kit_database_bytes 1.1534336e+07",
            "mlflow_kit_artifact_objects 14.0",
            "mlflow_kit_artifact_bytes 2097152.0",
        ]
    )
    host, conn = host_for([{"run": f"$ {facts.metrics(5200).command}", "stdout": exposition}])
    rows = dict(metrics.status_rows(host))
    conn.assert_done()
    assert rows == {
        "requests per instance": "5001:10, 5002:4",
        "counts": "2 experiments, 10 runs (1 deleted), 1 registered models, 2 versions",
        "storage": "database 11 MiB, 14 artifact objects (2 MiB)",
    }


def test_the_restore_play_order_and_a_failed_database_restore_resumes_serving():
    from provisioning import plays
    from tests.unit.test_plays import RecordingPlay

    recording = RecordingPlay({"stop serving": [5001]})
    plays.restore(recording, Deployment(**BASE), BACKUP_ID)
    assert [name for name, _f, _a in recording.steps] == [
        "preflight",
        "backup manifest",
        "stop serving",
        "restore database",
        "restore artifacts",
        "environment",
        "schema check",
        "schema migration",
        "resume serving",
        "health gate",
    ]

    class Failing(RecordingPlay):
        def step(self, name, function, *args):
            result = super().step(name, function, *args)
            if name == "restore database":
                raise transport.RemoteError("h", name, "restore-database", 1, "psql failed")
            return result

    failing = Failing({"stop serving": [5001]})
    with pytest.raises(transport.RemoteError):
        plays.restore(failing, Deployment(**BASE), BACKUP_ID)
    assert [name for name, _f, _a in failing.steps][-2:] == ["restore database", "resume serving"]
    assert failing.args("resume serving")[1] == [5001]
