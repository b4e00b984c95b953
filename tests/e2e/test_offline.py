"""offline_install on a host whose egress is blocked: the server is built from what this
machine fetched and uploaded (the Miniforge installer, the lock's wheels), and works.

The host is a VM in a private network without NAT (tests/localcloud/link.py: nothing it
sends is forwarded; the machine's own address, where PostgreSQL and the object stores
listen, still answers, as a VPC's private endpoints do). Its image already holds the
system packages, installed while it could still reach the Debian mirror: offline_install
covers Miniforge and the Python packages, not apt (README).

Stand-in: the Miniforge installer is the conda stand-in (tests/standin/conda_installer.py),
whose base Python is the guest's own 3.11; a real installer brings its own (3.12 for
25.3.1-0), which is why the wheelhouse step reads the host's Python before it fetches.
"""

from __future__ import annotations

import re
import shlex

import mlflow
import pytest
from mlflow import MlflowClient

from provisioning import lock, offline
from provisioning.layout import PATHS
from provisioning.settings import Deployment
from provisioning.steps.backup import CLIENT_PACKAGE
from provisioning.steps.packages import SYSTEM_PACKAGES, apt_install_script
from tests.e2e.conftest import point_the_client_at
from tests.e2e.kit import fab, uncompiled_modules, write_settings
from tests.standin.conda_installer import INSTALLER_NAME

pytestmark = pytest.mark.e2e
#: Beside the s3 host's tests (tests/conftest.py: worker_group), which leave that worker
#: free sooner than the other end-to-end tests.
WORKER_GROUP = "e2e-s3"
DATABASE = "mlflow_offline"


@pytest.fixture(scope="module")
def offline_host(local_cloud, tmp_path_factory):
    """A host with its system packages and no egress, bootstrapped with offline_install."""
    host = local_cloud.new_host()
    try:
        host.ssh("sudo sh -s", input=apt_install_script([*SYSTEM_PACKAGES, CLIENT_PACKAGE]))
        host.block_egress()
        settings = local_cloud.deployment_settings(host, "s3", database=DATABASE)
        cache = tmp_path_factory.mktemp("offline-cache")
        settings.update(
            offline_install=True,
            offline_cache_dir=str(cache),
            # This machine fetches it: a file of its own (the host could not reach the URL).
            miniforge_url=(local_cloud.files.directory / INSTALLER_NAME).as_uri(),
        )
        path = write_settings(tmp_path_factory.mktemp("offline") / "settings.yaml", settings)
        first = fab("bootstrap", "--settings", str(path))
        yield {"host": host, "settings": settings, "path": path, "first": first, "cache": cache}
    finally:
        local_cloud.remove_host(host)
        local_cloud.postgres.drop_database(DATABASE)


def step_line(output: str, step: str) -> str:
    """The play's line for ``step``: ``[host] STEP  changed (1.2s) - detail``."""
    found = re.search(rf"^\[[^\]]+\] {step} +(?:changed|ok) +\(.*$", output, re.M)
    assert found, f"no line for step {step!r} in:\n{output}"
    print(found.group(0))
    return found.group(0)


def test_a_host_without_egress_gets_a_working_server_from_the_uploads(
    offline_host, monkeypatch, tmp_path
):
    host, first = offline_host["host"], offline_host["first"].stdout
    # The host reached nothing beyond the machine, before or after.
    assert host.egress_blocked()
    refused = host.ssh("curl -sS -m 10 -o /dev/null https://pypi.org/simple/", check=False)
    assert refused.returncode != 0, refused.stdout
    assert " changed " in step_line(first, "miniforge")
    step_line(first, "conda environment")
    uploaded = step_line(first, "wheelhouse")
    found = lock.find(Deployment.mlflow_version)
    script = shlex.quote(offline._TARGET_SCRIPT)
    target = offline.parse_target(host.ssh(f"{PATHS['conda_python']} -c {script}").stdout)
    wanted = offline.requirements(found, target)
    assert re.search(rf"changed .* uploaded {len(wanted)} of {len(wanted)} wheels for "
                     rf"{re.escape(target.key)} \(\d+ MB\)", uploaded), uploaded  # fmt: skip
    # The installer ran from its upload, which is gone; the wheels are those of the lock.
    assert host.ssh("test -e /opt/mlflow/miniforge-installer.sh || echo gone").stdout == "gone\n"
    on_host = host.ssh(f"ls /opt/mlflow/wheelhouse/{found.host_name.removesuffix('.txt')}").stdout
    assert len(on_host.split()) == len(wanted)

    # The environment runs exactly the lock's versions (pip freeze in the current env).
    frozen = host.ssh("/opt/mlflow/current/bin/python -m pip freeze --all").stdout
    installed = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in frozen.splitlines()
        if "==" in line
    }
    for pin in (line.split(" --hash=")[0] for line in wanted):
        name, version = pin.split("==")
        name = re.sub(r"\[.*\]", "", name).lower().replace("_", "-")
        assert installed.get(name) == version, (pin, installed.get(name))
    assert uncompiled_modules(host) == []

    # And the server works: a run, a metric and an artifact through the proxy to the bucket.
    point_the_client_at(offline_host, monkeypatch, tmp_path / "server.crt")
    mlflow.set_experiment("offline")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.25)
        mlflow.log_text("built without internet", "note.txt")
    client = MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.25}
    assert (
        mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt") == "built without internet"
    )


def test_a_second_offline_bootstrap_uploads_and_changes_nothing(offline_host):
    again = fab("bootstrap", "--settings", str(offline_host["path"])).stdout
    assert " 0 changed" in again, again
    assert "uploaded" not in again and "downloading" not in again, again
    assert re.search(r"\] wheelhouse +ok ", again), again
