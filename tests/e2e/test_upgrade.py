"""Upgrading a server's MLflow, as an operator does: under load, with data and users on it.

An upgrade loses no request and no object; a downgrade below the database's schema is
refused before anything changes; a migration that cannot take its lock leaves the old
version serving; a switch that fails after the migration rolls back and names the
command that restores the backup taken before it, and that command works.

Stand-in: the package registry holds MLflow 3.18.0's own wheel, which carries all of
MLflow's code, but not the two distributions it pins, mlflow-skinny and mlflow-tracing
3.18.0. The guest's pip finds those two as wheels that carry only their metadata
(requiring what their 3.17.2 releases require). What the real ones do that these do not:
a dependency added or raised in their 3.18.0 release is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
import secrets
import shlex
import subprocess
import time
import zipfile
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import yaml
from mlflow import MlflowClient

from tests.e2e.kit import FAB, REPO, RequestLoop, fab, main_pids, write_settings
from tests.e2e.test_backup import log_runs, snapshot
from tests.e2e.test_survival import assert_lost_nothing, new_run
from tests.localcloud.services import postgres_bindir

pytestmark = pytest.mark.e2e

OLD, NEW = "3.17.2", "3.18.0"
#: A table MLflow 3.18.0's migrations alter (8b6ad64cb8f5 adds columns to it).
ALTERED_TABLE = "issues"
#: Pinned by MLflow 3.18.0, missing from the registry: given to the guest's pip from here.
MISSING_FROM_REGISTRY = ("mlflow-skinny", "mlflow-tracing")
WHEELS_ON_GUEST = "/var/lib/kit-e2e-wheels"


def metadata_only_wheel(name: str, version: str) -> tuple[str, bytes]:
    """A wheel of ``name`` ``version`` holding no code, requiring what the installed release
    of ``name`` requires; its file name and bytes."""
    requires = [r for r in metadata.requires(name) or [] if "extra ==" not in r]
    stem = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{stem}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: kit-e2e\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{stem}.dist-info/RECORD"] = "\n".join([*record, f"{stem}.dist-info/RECORD,,"]) + "\n"
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return f"{stem}-py3-none-any.whl", data.getvalue()


def the_registry_completes(host, version: str, settings: str | Path) -> None:
    """The guest's pip also looks in a folder holding what the registry lacks of ``version``;
    and, as no lock can be made for it here (provisioning.lock resolves against the same
    registry), the settings install its packages unlocked."""
    written = yaml.safe_load(Path(settings).read_text())
    write_settings(Path(settings), {**written, "install_from_lock": False})
    for name in MISSING_FROM_REGISTRY:
        file, data = metadata_only_wheel(name, version)
        host.ssh(f"sudo mkdir -p {WHEELS_ON_GUEST} && base64 -d | sudo tee "
                 f"{WHEELS_ON_GUEST}/{file} >/dev/null", input=base64.b64encode(data).decode())  # fmt: skip
    # Read by every pip on the guest beside /etc/pip.conf (which the kit manages).
    host.ssh("sudo mkdir -p /etc/xdg/pip && printf '[global]\\nfind-links = %s\\n' "
             f"{WHEELS_ON_GUEST} | sudo tee /etc/xdg/pip/pip.conf >/dev/null")  # fmt: skip


#: ``BuiltEnvironments``' key for MLflow NEW's environment on a copy of a session host
#: after ``the_registry_completes``: the same environment.yml for either backend (the
#: unlocked requirements name both storage clients, as the lock holds both).
NEW_ENV = f"mlflow {NEW} unlocked"


def a_user_with_a_grant(client_env, experiment_id: str) -> dict:
    """A non-admin user allowed to edit one experiment (the server's default is READ)."""
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=client_env["url"])
    name = f"analyst-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(18)
    auth.create_user(name, password)
    auth.grant_user_permission(name, "experiment", experiment_id, "EDIT")
    other = MlflowClient().create_experiment(f"not-for-{name}")
    return {"username": name, "password": password, "experiment": experiment_id, "other": other}


def what_the_user_can_do(client_env, user: dict) -> dict:
    """The user's login (and a wrong password's), a run created where it may edit and where
    it may only read, and its grant as the admin reads it."""
    from mlflow.server import get_app_client

    api = f"{client_env['url']}/api/2.0/mlflow"

    def status(method: str, path: str, password: str = user["password"], **kwargs) -> int:
        return requests.request(method, f"{api}/{path}", auth=(user["username"], password),
                                verify=client_env["cert"], timeout=30, **kwargs).status_code  # fmt: skip

    auth = get_app_client("basic-auth", tracking_uri=client_env["url"])
    grant = auth.get_user_permission(user["username"], "experiment", user["experiment"])
    get = {"params": {"experiment_id": user["experiment"]}}
    return {
        "login": status("GET", "experiments/get", **get),
        "wrong password": status("GET", "experiments/get", password="not-it", **get),
        "run in its experiment": status(
            "POST", "runs/create", json={"experiment_id": user["experiment"]}
        ),
        "run elsewhere": status("POST", "runs/create", json={"experiment_id": user["other"]}),
        "grant": grant.permission,
    }


def assert_runs(path: str, host, version: str) -> str:
    """``fab status`` shows every running instance on ``version``, none pending a restart."""
    status = fab("status", "--settings", path).stdout
    units = main_pids(host)
    assert units, status
    for unit in units:
        port = unit.removeprefix("mlflow-server@").removesuffix(".service")
        assert re.search(rf"instance {port}\s+MLflow {re.escape(version)}, env ", status), status
    assert "restart pending" not in status, status
    assert re.search(rf"mlflow on disk\s+{re.escape(version)} ", status), status
    return status


def current_env(host) -> str:
    return host.ssh("readlink /opt/mlflow/current").stdout.strip()


def health(client_env) -> int:
    return requests.get(
        f"{client_env['url']}/health", verify=client_env["cert"], timeout=10
    ).status_code


def step_line(output: str, step: str) -> str:
    """The line a play printed for ``step`` (``[host] step  changed (1.2s) - detail``)."""
    found = re.search(rf"^\[[^\]]+\] {re.escape(step)}\s+(?:ok|changed)\s.*$", output, re.M)
    assert found, f"no {step!r} line in:\n{output}"
    return found.group(0)


def upgrade_under_load(client_env, path: str, version: str) -> tuple:
    """``fab upgrade`` while a client logs a metric every 0.1 s; its result, the loop, seconds."""
    started = time.monotonic()
    with RequestLoop(client_env, new_run(client_env), pause=0.1) as loop:
        result = fab("upgrade", "--mlflow-version", version, "--settings", path, check=False)
        time.sleep(2)
    return result, loop, time.monotonic() - started


@contextlib.contextmanager
def a_reader_idle_in_transaction(postgres, database: str, table: str):
    """A session that read ``table`` and left its transaction open (a notebook, a BI tool):
    it holds the table's ACCESS SHARE lock, which a migration's ALTER TABLE waits for."""
    name = f"kit-e2e-reader-{secrets.token_hex(3)}"
    psql = subprocess.Popen(
        [str(postgres_bindir() / "psql"), "-X", "-q", "-h", str(postgres.socket_dir),
         "-p", str(postgres.port), "-U", "postgres", "-d", database],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        text=True, user="postgres", env={"PGAPPNAME": name},
    )  # fmt: skip
    try:
        psql.stdin.write(f"BEGIN;\nSELECT count(*) FROM {table};\n")
        psql.stdin.flush()
        # Names of this test's own making, not input.
        held = (f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' "  # noqa: S608
                "AND state = 'idle in transaction';\n")  # fmt: skip
        deadline = time.monotonic() + 30
        while postgres.psql(held).strip() != "1":
            assert psql.poll() is None, "the reader's psql ended"
            assert time.monotonic() < deadline, f"{table} not read within 30 s"
            time.sleep(0.5)
        yield
    finally:
        with contextlib.suppress(OSError):
            psql.stdin.write("ROLLBACK;\n")
            psql.stdin.close()
        try:
            psql.wait(timeout=30)
        except subprocess.TimeoutExpired:
            psql.kill()
            psql.wait(timeout=30)


def run_as_printed(command: str, answer: str) -> subprocess.CompletedProcess:
    """A ``fab ...`` command line as the kit printed it, typed at a terminal; ``answer`` to its
    question."""
    argv = shlex.split(command)
    assert argv[0] == "fab", command
    return subprocess.run([FAB, *argv[1:]], cwd=REPO, input=answer, capture_output=True,
                          text=True, timeout=1800, check=False)  # fmt: skip


# The same on s3. On gcs, as the group's roll (test_upgrade_group.py) is: the environment
# this builds is copied into the group's hosts, and the worker with the s3 tests also runs
# the unit and service tiers.
@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)
def test_an_upgrade_under_load_keeps_every_object_and_user_and_a_downgrade_is_refused(
    deployed_clone, clone_client_env, built_environments
):
    host, path = deployed_clone["host"], str(deployed_clone["path"])
    assert_runs(path, host, OLD)
    the_registry_completes(host, NEW, path)
    logged = log_runs(f"upgrade-{secrets.token_hex(3)}")
    user = a_user_with_a_grant(clone_client_env, logged["experiment"])
    before = snapshot(logged)
    allowed = what_the_user_can_do(clone_client_env, user)
    assert allowed == {"login": 200, "wrong password": 401, "run in its experiment": 200,
                       "run elsewhere": 403, "grant": "EDIT"}  # fmt: skip

    upgraded, loop, seconds = upgrade_under_load(clone_client_env, path, NEW)
    print(f"upgrade {OLD} -> {NEW}: {seconds:.0f}s, {loop.sent} requests, "
          f"{len(loop.failures)} failed")  # fmt: skip
    out = upgraded.stdout
    assert upgraded.returncode == 0, out + upgraded.stderr
    built_environments.keep(NEW_ENV, host)
    assert f"MLflow {NEW} migrates" in step_line(out, "schema check")
    backup_id = re.search(r" - backup (\S+): database by pg_dump, \d+ runs",
                          step_line(out, "backup before migration")).group(1)  # fmt: skip
    assert f"schema at MLflow {NEW}" in step_line(out, "schema migration")
    assert f"MLflow {NEW} running; mlflow_version: {NEW} written to {path}" in out
    listed = fab("backups", "--settings", path).stdout
    assert re.search(rf"^{backup_id} .* before migrating to MLflow {NEW}$", listed, re.M), listed

    assert_lost_nothing(loop, 100)
    history = MlflowClient().get_metric_history(loop.run_id, "loop")
    assert sorted(int(m.value) for m in history) == list(range(loop.sent))
    assert snapshot(logged) == before
    import mlflow
    import numpy as np

    model = mlflow.pyfunc.load_model(f"models:/{logged['name']}/1")
    assert list(model.predict(np.array([[0.0], [3.0]]))) == [0, 1]
    assert what_the_user_can_do(clone_client_env, user) == allowed
    assert_runs(path, host, NEW)

    # A downgrade, by the upgrade task or by a bootstrap from older settings, changes nothing.
    pids, current = main_pids(host), current_env(host)
    older = write_settings(deployed_clone["path"].parent / "older.yaml",
                           {**deployed_clone["settings"], "mlflow_version": OLD})  # fmt: skip
    for args in (["upgrade", "--mlflow-version", OLD, "--settings", path],
                 ["bootstrap", "--settings", str(older)]):  # fmt: skip
        refused = fab(*args, check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode == 1, said
        assert "refusing a downgrade" in said and "Nothing was changed" in said, said
        assert f"MLflow {OLD} does not know" in said and f"servers run MLflow {NEW}" in said, said
        assert "backup before migration" not in said and "schema migration" not in said
        assert main_pids(host) == pids and current_env(host) == current
    assert f"mlflow_version: {NEW}" in deployed_clone["path"].read_text()
    assert health(clone_client_env) == 200
    assert_runs(path, host, NEW)


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the same on gcs
def test_a_failed_migration_or_switch_leaves_the_old_version_and_the_restore_command_works(
    deployed_clone, clone_client_env, built_environments
):
    host, path = deployed_clone["host"], str(deployed_clone["path"])
    cloud = deployed_clone["cloud"]
    database = urlparse(deployed_clone["settings"]["backend_store_uri"]).path.lstrip("/")
    the_registry_completes(host, NEW, path)
    # MLflow NEW's environment as the gcs host's upgrade built it, when it has (the other
    # worker of make test): this test is about the migration and the switch around it.
    built_environments.seed(NEW_ENV, host)
    logged = log_runs(f"failed-upgrade-{secrets.token_hex(3)}")
    user = a_user_with_a_grant(clone_client_env, logged["experiment"])
    before, allowed = snapshot(logged), what_the_user_can_do(clone_client_env, user)
    pids, current = main_pids(host), current_env(host)

    # The migration waits for a lock another session holds, gives up, and nothing moves.
    with a_reader_idle_in_transaction(cloud.postgres, database, ALTERED_TABLE):
        failed, loop, seconds = upgrade_under_load(clone_client_env, path, NEW)
    said = failed.stdout + failed.stderr
    print(f"upgrade stopped by a lock: {seconds:.0f}s, {loop.sent} requests, "
          f"{len(loop.failures)} failed")  # fmt: skip
    assert failed.returncode == 1, said
    assert "lock timeout" in said and "mlflow-migrate.service" in said, said
    step_line(failed.stdout, "backup before migration")
    schema = step_line(failed.stdout, "schema check").split(" - ", 1)[1]
    assert f"MLflow {NEW} migrates" in schema, schema
    assert "activate environment" not in failed.stdout and "roll back" not in failed.stdout
    assert_lost_nothing(loop, 50)
    assert main_pids(host) == pids and current_env(host) == current
    assert health(clone_client_env) == 200
    assert snapshot(logged) == before
    assert_runs(path, host, OLD)
    assert f"mlflow_version: {NEW}" not in deployed_clone["path"].read_text()

    # The next try migrates; then the new environment's servers cannot start (its mlflow
    # entry point is unusable): the switch rolls back and names the restore command.
    new_env = host.ssh("readlink /opt/mlflow/next").stdout.strip()
    assert new_env != current
    host.ssh(f"ls -d {new_env}/lib/python3*/site-packages/mlflow-{NEW}.dist-info")
    host.ssh(f"sudo chmod a-x {new_env}/bin/mlflow")
    failed, loop, seconds = upgrade_under_load(clone_client_env, path, NEW)
    said = failed.stdout + failed.stderr
    print(f"upgrade rolled back: {seconds:.0f}s, {loop.sent} requests, "
          f"{len(loop.failures)} failed")  # fmt: skip
    assert failed.returncode == 1, said
    # The lock's failure had changed nothing: the schema is where it was.
    assert step_line(failed.stdout, "schema check").split(" - ", 1)[1] == schema
    backup_id = re.search(r" - backup (\S+): database by pg_dump",
                          step_line(failed.stdout, "backup before migration")).group(1)  # fmt: skip
    assert f"schema at MLflow {NEW}" in step_line(failed.stdout, "schema migration")
    rolled = step_line(failed.stdout, "roll back")
    assert f"back on env {current.rsplit('/', 1)[-1]}" in rolled, rolled
    restore = re.search(r"the database was migrated: to put it back, (fab restore .*)$", rolled)
    assert restore, rolled
    assert restore.group(1) == f"fab restore --from {backup_id} --settings {path}"
    assert current_env(host) == current
    # The environment that failed is not switched to again as it is: the next try rebuilds it.
    assert f"env {new_env.rsplit('/', 1)[-1]} is built again on the next try" in rolled, rolled
    assert (
        host.ssh(f"ls -A {new_env}/.kit-complete 2>/dev/null || echo gone").stdout.strip() == "gone"
    )
    assert_lost_nothing(loop, 50)
    assert health(clone_client_env) == 200

    started = time.monotonic()
    restored = run_as_printed(restore.group(1), answer="y\n")
    print(f"restore: {time.monotonic() - started:.0f}s")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"backup {backup_id} restored" in restored.stdout and "smoke ok" in restored.stdout
    assert set(main_pids(host)) == set(pids)
    assert_runs(path, host, OLD)
    assert health(clone_client_env) == 200
    assert snapshot(logged) == before
    assert what_the_user_can_do(clone_client_env, user) == allowed
