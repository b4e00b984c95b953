"""Backups: the programs that run on the VM (against moto's S3), the managed databases'
backups (RDS against moto, Cloud SQL against responses written from Google's API
reference), and how a deployment picks its method.

What these stand-ins do not show:
- moto's RDS makes a snapshot and a restored instance available at once and renames at
  once; real RDS takes minutes for each, and a renamed instance's endpoint answers under
  the new name only after a while (rds.rename polls for it). moto does not enforce the
  parameter group's rds.force_ssl, storage encryption or instance class limits.
- The recorded Cloud SQL exchanges are written from the API reference, not captured:
  real operations take minutes, may report RUNNING many times, and the restore also
  restarts the instance (connections drop); IAM refusals may come as 403 or 404.
- moto's S3 copies any size in one CopyObject; real S3 refuses above 5 GiB (the copy
  then goes part by part, kit_storage.S3_SINGLE_COPY_MAX), and multipart ETags are not
  MD5s of the content.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from provisioning.auth import OIDC_SCHEMA
from provisioning.backups import cloudsql, rds, record
from provisioning.backups.remote import HERE as REMOTE
from provisioning.settings import Deployment
from tests.unit.conftest import NASTY_PASSWORD, NASTY_URI, valid_settings

sys.path.insert(0, str(REMOTE))
import kit_database  # noqa: E402
import kit_storage  # noqa: E402 - installed beside the programs on the VM
import mlflow_backup  # noqa: E402
import mlflow_gc  # noqa: E402

RECORDED = Path(__file__).parent / "recorded"
BUCKET = "artifacts"


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 with the artifact bucket, as the VM's storage client sees it."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", f"s3://{BUCKET}/mlflow")
    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def put(client, key: str, body: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=f"mlflow/{key}", Body=body)


def keys(client) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/").get("Contents", [])
    return {
        o["Key"][len("mlflow/") :]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
    }


# --------------------------------------------------------------------------- the artifact store


def test_artifacts_leave_out_the_kit_s_own_and_what_is_outside_the_prefix(s3):
    put(s3, "1/abc/artifacts/model.pkl", b"model")
    put(s3, ".kit-backups/blobs/x", b"blob")
    s3.put_object(Bucket=BUCKET, Key="other/1/abc", Body=b"not ours")
    store = kit_storage.open_store()
    assert [(e.key, e.size) for e in store.artifacts()] == [("1/abc/artifacts/model.pkl", 5)]
    assert store.children(".kit-backups") == ["blobs"]


def test_same_content_shares_one_blob_and_other_content_does_not(s3):
    put(s3, "1/a/artifacts/f", b"same")
    put(s3, "2/b/artifacts/g", b"same")
    put(s3, "3/c/artifacts/h", b"different")
    entries = {e.key: e for e in kit_storage.open_store().artifacts()}
    assert entries["1/a/artifacts/f"].blob == entries["2/b/artifacts/g"].blob
    assert entries["1/a/artifacts/f"].blob != entries["3/c/artifacts/h"].blob
    assert entries["1/a/artifacts/f"].blob.startswith(".kit-backups/blobs/")


def test_backed_up_artifacts_come_back_after_the_prefix_is_emptied(s3):
    put(s3, "1/a/artifacts/f.txt", b"one")
    put(s3, "1/a/artifacts/g.bin", b"\x00" * 1000)
    store = kit_storage.open_store()
    summary = mlflow_backup.backup_artifacts(store, "20250101T000000Z")
    assert summary["objects"] == 2 and summary["bytes"] == 1003 and summary["copied"] == 2
    manifest = {"id": "20250101T000000Z", "artifacts": summary, "database": {"method": "pg_dump"}}
    store.put(".kit-backups/20250101T000000Z/manifest.json", json.dumps(manifest).encode())
    # A second backup copies nothing new: the content is in the blobs already.
    assert mlflow_backup.backup_artifacts(store, "20250102T000000Z")["copied"] == 0

    for key in ("1/a/artifacts/f.txt", "1/a/artifacts/g.bin"):
        s3.delete_object(Bucket=BUCKET, Key=f"mlflow/{key}")
    put(s3, "1/a/artifacts/newer.txt", b"logged after the backup")
    result = mlflow_backup.restore_artifacts("20250101T000000Z")
    assert result == {"objects": 2, "copied": 2, "not_in_backup": 1}
    back = keys(s3)
    assert back["1/a/artifacts/f.txt"] == b"one"
    assert back["1/a/artifacts/g.bin"] == b"\x00" * 1000
    assert back["1/a/artifacts/newer.txt"] == b"logged after the backup"
    # Restored twice: nothing left to copy.
    assert mlflow_backup.restore_artifacts("20250101T000000Z")["copied"] == 0


def test_a_changed_object_is_put_back_as_it_was(s3):
    put(s3, "1/a/artifacts/f.txt", b"original")
    store = kit_storage.open_store()
    summary = mlflow_backup.backup_artifacts(store, "B1")
    manifest = {"id": "B1", "artifacts": summary, "database": {"method": "pg_dump"}}
    store.put(".kit-backups/B1/manifest.json", json.dumps(manifest).encode())
    put(s3, "1/a/artifacts/f.txt", b"overwritten")
    assert mlflow_backup.restore_artifacts("B1")["copied"] == 1
    assert keys(s3)["1/a/artifacts/f.txt"] == b"original"


def test_listing_shows_complete_and_incomplete_backups(s3):
    store = kit_storage.open_store()
    summary = mlflow_backup.backup_artifacts(store, "B1")
    manifest = {"id": "B1", "finished": "2025-01-01T00:00:00Z", "reason": "on demand",
                "mlflow_version": "3.17.2", "artifacts": summary,
                "database": {"method": "pg_dump", "counts": {"runs": 4}}}  # fmt: skip
    store.put(".kit-backups/B1/manifest.json", json.dumps(manifest).encode())
    store.put(".kit-backups/B2/objects.jsonl", b"")  # a backup that never finished
    rows = mlflow_backup.listing(store)
    assert [(r["id"], r["complete"]) for r in rows] == [("B1", True), ("B2", False)]
    assert rows[0]["runs"] == 4 and rows[0]["database"] == "pg_dump"


def test_an_incomplete_or_unknown_backup_is_refused(s3):
    store = kit_storage.open_store()
    store.put(".kit-backups/B2/objects.jsonl", b"")
    for backup_id in ("B2", "nope", "../etc"):
        with pytest.raises(mlflow_backup.Refused):
            mlflow_backup.read_manifest(store, backup_id)
    assert mlflow_backup.main(["restore-artifacts", "B2"]) == 2


# --------------------------------------------------------------------------- the database


def test_libpq_settings_carry_the_uri_and_the_passfile_escapes_the_password():
    uri = NASTY_URI + "?sslmode=verify-full&sslrootcert=%2Fetc%2Fmlflow%2Fdb-ca.pem"
    settings = kit_database.libpq_settings(uri)
    assert settings["password"] == NASTY_PASSWORD
    assert (settings["PGHOST"], settings["PGPORT"], settings["PGUSER"], settings["PGDATABASE"]) == (
        "10.20.0.3", "5432", "mlflow", "mlflow")  # fmt: skip
    assert settings["PGSSLMODE"] == "verify-full"
    assert settings["PGSSLROOTCERT"] == "/etc/mlflow/db-ca.pem"
    line = kit_database.passfile_line(settings)
    # libpq splits on unescaped ':' and unescapes '\:' and '\\'.
    fields, current, escaped = [], "", False
    for ch in line.rstrip("\n"):
        if escaped:
            current, escaped = current + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields, current = fields + [current], ""
        else:
            current += ch
    assert fields + [current] == ["10.20.0.3", "5432", "mlflow", "mlflow", NASTY_PASSWORD]


def test_the_passfile_is_private_and_the_password_stays_out_of_the_environment(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(kit_database.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", NASTY_URI)
    db = kit_database.Database(NASTY_URI, str(tmp_path))
    assert (tmp_path / "pgpass").stat().st_mode & 0o777 == 0o600
    assert NASTY_PASSWORD not in json.dumps(db.environ)
    assert quote(NASTY_PASSWORD, safe="") not in json.dumps(db.environ)


@pytest.mark.parametrize(
    ("client", "server", "refused"), [(15, 15, False), (16, 15, False), (15, 16, True)]
)
def test_pg_dump_older_than_the_server_is_refused_naming_both(
    tmp_path, monkeypatch, client, server, refused
):
    monkeypatch.setattr(kit_database.shutil, "which", lambda name: f"/usr/bin/{name}")
    db = kit_database.Database(NASTY_URI, str(tmp_path))
    monkeypatch.setattr(db, "versions", lambda: (client, server, f"{client}.4", f"{server}.2"))
    if refused:
        with pytest.raises(kit_database.Refused) as caught:
            db.check_versions()
        assert f"pg_dump {client}.4" in str(caught.value) and f"PostgreSQL {server}.2" in str(
            caught.value
        )
        assert "postgresql-client-16" in str(caught.value)
    else:
        assert db.check_versions() == (f"{client}.4", f"{server}.2")


def test_the_restore_drops_only_what_the_role_owns_in_public_and_the_plugins_schema():
    sql = kit_database.DROP_OWNED_BEFORE_RESTORE
    assert sql.count("n.nspname = 'public'") == 4
    assert sql.count("pg_has_role(") == 5
    assert sql.count("DROP SCHEMA") == 1 and "DROP SCHEMA mlflow_oidc_auth CASCADE" in sql
    assert "nspname = 'mlflow_oidc_auth'" in sql and "DROP DATABASE" not in sql
    assert OIDC_SCHEMA == "mlflow_oidc_auth"  # the program on the VM cannot import it


# --------------------------------------------------------------------------- gc


def test_gc_summary_counts_what_mlflow_gc_says_it_removed(tmp_path):
    output = (
        "Run with ID 1a has been permanently deleted.\n"
        "Run with ID 2b has been permanently deleted.\n"
        "Logged model with ID m-1 has been permanently deleted.\n"
    )
    assert mlflow_gc.summarize(output) == {"runs": 2, "logged_models": 1}
    state = tmp_path / "gc-last.json"
    mlflow_gc.write_state({"result": "success", "runs": 2}, str(state))
    assert json.loads(state.read_text()) == {"result": "success", "runs": 2}
    assert state.stat().st_mode & 0o777 == 0o640


def test_metrics_merge_labels_every_instance_s_samples():
    pytest.importorskip("prometheus_client")
    import mlflow_metrics

    text = (
        "# HELP mlflow_http_request_total Total requests\n"
        "# TYPE mlflow_http_request_total counter\n"
        'mlflow_http_request_total{method="GET",status="200"} 3.0\n'
    )
    families = mlflow_metrics.merge({5001: text, 5002: text, 5003: None})
    samples = [
        (s.name, s.labels.get("instance_port"), s.value) for f in families for s in f.samples
    ]
    assert ("mlflow_kit_instance_up", "5003", 0) in samples
    assert ("mlflow_http_request_total", "5001", 3.0) in samples
    assert ("mlflow_http_request_total", "5002", 3.0) in samples


def test_metrics_find_the_instances_nginx_sends_to():
    import mlflow_metrics

    upstream = (
        "upstream mlflow {\n    least_conn;\n"
        "    server 127.0.0.1:5001 max_fails=3 fail_timeout=10s;\n"
        "    server 127.0.0.1:5002 max_fails=3 fail_timeout=10s down;\n}\n"
    )
    assert mlflow_metrics.instance_ports(upstream) == [5001, 5002]


# --------------------------------------------------------------------------- the method


@pytest.mark.parametrize(
    ("changes", "method"),
    [
        ({}, "pg_dump"),
        ({"db_instance": "mlflow-db", "db_location": "eu-west-1"}, "rds-snapshot"),
        (
            {"db_instance": "mlflow-db", "db_location": "eu-west-1", "database_backup": "pg_dump"},
            "pg_dump",
        ),
        (
            {
                "cloud": "gcp",
                "artifacts_destination": "gs://bucket/p",
                "db_instance": "mlflow-db",
                "db_location": "my-project",
            },
            "cloudsql-backup-run",
        ),  # fmt: skip
        ({"cloud": "local", "database_backup": "auto"}, "pg_dump"),
    ],
)
def test_the_database_method_follows_the_settings(changes, method):
    assert record.database_method(Deployment(**valid_settings(**changes))) == method


def test_backup_ids_sort_by_time():
    import datetime

    a = record.new_id(datetime.datetime(2025, 1, 7, 3, 15, 0, tzinfo=datetime.UTC))
    b = record.new_id(datetime.datetime(2025, 1, 7, 3, 15, 1, tzinfo=datetime.UTC))
    assert a == "20250107T031500Z" and a < b


# --------------------------------------------------------------------------- RDS (moto)


@pytest.fixture
def rds_client(monkeypatch):
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = rds.client("eu-west-1")
        client.create_db_parameter_group(
            DBParameterGroupName="mlflow-pg16", DBParameterGroupFamily="postgres16",
            Description="force ssl")  # fmt: skip
        client.create_db_instance(
            DBInstanceIdentifier="mlflow-dev-db", DBInstanceClass="db.t4g.micro",
            Engine="postgres", EngineVersion="16.4", MasterUsername="mlflow",
            MasterUserPassword="a-password-123", AllocatedStorage=20,
            DBParameterGroupName="mlflow-pg16", DeletionProtection=False,
            Tags=[{"Key": "mlflow-kit-stack", "Value": "dev"}],
        )  # fmt: skip
        yield client


def test_rds_snapshot_is_taken_and_waited_for(rds_client):
    taken = rds.take(rds_client, "mlflow-dev-db", "20250107T031500Z", delay=0)
    assert taken == {
        "method": "rds-snapshot",
        "snapshot": "mlflow-dev-db-kit-20250107-031500",
        "instance": "mlflow-dev-db",
        "region": "eu-west-1",
        "engine_version": "16.4",
    }
    found = rds_client.describe_db_snapshots(DBSnapshotIdentifier=taken["snapshot"])["DBSnapshots"]
    assert found[0]["Status"] == "available"
    assert found[0]["SnapshotType"] == "manual"


def test_rds_restore_makes_a_new_instance_then_gives_it_the_old_name(rds_client):
    taken = rds.take(rds_client, "mlflow-dev-db", "20250107T031500Z", delay=0)
    names = rds.restore(rds_client, "mlflow-dev-db", taken["snapshot"], "20250107t031500z", delay=0)
    assert names == {
        "instance": "mlflow-dev-db",
        "previous": "mlflow-dev-db-before-20250107t031500z",
    }
    instances = {
        i["DBInstanceIdentifier"]: i for i in rds_client.describe_db_instances()["DBInstances"]
    }
    assert set(instances) == {"mlflow-dev-db", "mlflow-dev-db-before-20250107t031500z"}
    restored = instances["mlflow-dev-db"]
    assert restored["DBParameterGroups"][0]["DBParameterGroupName"] == "mlflow-pg16"
    assert restored.get("PubliclyAccessible", False) is False
    assert restored["DBInstanceClass"] == "db.t4g.micro"


def test_rds_snapshot_of_a_missing_instance_fails_naming_it(rds_client):
    with pytest.raises(rds_client.exceptions.DBInstanceNotFoundFault, match="mlflow-nope"):
        rds.take(rds_client, "mlflow-nope", "20250107T031500Z", delay=0)


# --------------------------------------------------------------------------- Cloud SQL (recorded)


class Replay:
    """An AuthorizedSession that answers from recorded responses, in order, checking each call."""

    def __init__(self, name: str):
        self.exchanges = json.loads((RECORDED / name).read_text())["exchanges"]
        self.calls = []

    def _answer(self, method, url, body=None, params=None):
        expected = self.exchanges.pop(0)
        assert (method, url) == (expected["method"], expected["url"])
        if "body" in expected:
            assert body == expected["body"]
        self.calls.append((method, url))
        return Response(expected["status"], expected["response"])

    def post(self, url, json=None):
        return self._answer("POST", url, body=json)

    def get(self, url, params=None):
        return self._answer("GET", url, params=params)


class Response:
    def __init__(self, status, body):
        self.status_code, self._body = status, body
        self.text = json.dumps(body)

    def json(self):
        return self._body


def test_cloudsql_backup_run_is_inserted_and_waited_for(monkeypatch):
    monkeypatch.setattr(cloudsql.time, "sleep", lambda _s: None)
    http = Replay("cloudsql_backup.json")
    taken = cloudsql.take(http, "my-project", "mlflow-dev-db", "20250107T031500Z")
    assert taken == {
        "method": "cloudsql-backup-run",
        "backup_run": "1736219700000",
        "instance": "mlflow-dev-db",
        "project": "my-project",
        "operation": "a7b4f0d2-1c3e-4f5a-9b8c-000000000001",
    }
    assert http.exchanges == []


def test_cloudsql_restore_overwrites_the_instance_and_waits(monkeypatch):
    monkeypatch.setattr(cloudsql.time, "sleep", lambda _s: None)
    http = Replay("cloudsql_restore.json")
    done = cloudsql.restore(http, "my-project", "mlflow-dev-db", "1736219700000")
    assert done == {
        "instance": "mlflow-dev-db",
        "operation": "c1d2e3f4-0000-4000-8000-000000000003",
    }
    assert http.exchanges == []


def test_cloudsql_operation_errors_are_reported(monkeypatch):
    monkeypatch.setattr(cloudsql.time, "sleep", lambda _s: None)
    http = Replay("cloudsql_backup_fails.json")
    with pytest.raises(cloudsql.CloudSqlError, match="BACKUP_VOLUME.*instance is not running"):
        cloudsql.take(http, "my-project", "mlflow-dev-db", "20250107T031500Z")


def test_cloudsql_refusal_names_the_call_and_the_reason():
    http = Replay("cloudsql_forbidden.json")
    with pytest.raises(cloudsql.CloudSqlError, match=r"backupRuns.insert: HTTP 403: .*permission"):
        cloudsql.take(http, "my-project", "mlflow-dev-db", "20250107T031500Z")


@pytest.mark.parametrize("step", ["backup", "gc", "metrics"])
def test_each_step_installs_the_modules_its_programs_import(step):
    """A program imports its kit_* modules from beside it on the VM: a step that installs
    the program without them installs a program that cannot start."""
    import ast
    import importlib

    programs = importlib.import_module(f"provisioning.steps.{step}").PROGRAMS
    kit_modules = {p.stem for p in REMOTE.glob("kit_*.py")}
    for program in programs:
        tree = ast.parse((REMOTE / program).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        missing = {m for m in imported & kit_modules if f"{m}.py" not in programs}
        assert not missing, f"{step} installs {program} without {sorted(missing)}"
