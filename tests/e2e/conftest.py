"""Hosts the end-to-end tests share: bootstrapped once per artifact backend for the session."""

from __future__ import annotations

import secrets

import pytest

from provisioning.settings import Deployment
from tests.e2e.kit import (
    BuiltEnvironments,
    fab,
    kill_fab_when,
    servers_not_started_at_boot,
    serving_copy,
    wait_proxy_healthy,
    write_settings,
)
from tests.localcloud.cloudlike import CloudLike

#: Each backend's host plays one cloud's first boot: cloud-init, apt's locks held by an
#: unattended upgrade, a late sshd, the stack's machine type (the GCP one an e2-small).
CLOUD_OF = {"s3": "aws", "gcs": "gcp"}


#: ``BuiltEnvironments``' key for the session hosts' environment (the default settings').
SERVER_ENV = f"mlflow {Deployment.mlflow_version} locked"


@pytest.fixture(scope="session", params=["s3", "gcs"])
def deployed(request, local_cloud, tmp_path_factory, built_environments):
    """A cloud-like host bootstrapped once per artifact backend, right after its first boot
    (before sshd answers); the gcs one after an interrupted first try. Its snapshot, taken
    then, is what every copy of it starts from (``LocalCloud.snapshot``).

    The gcs host builds its environment (interrupted, then attached to); the s3 host, when
    the gcs host's is built or being built (by the other worker of ``make test``), waits
    for it before it is created, then starts with a copy of it in place, as a VM made from
    an image that holds one: the same locked environment.yml for both backends, so its
    play finds it built."""
    backend = request.param
    kept = None
    if backend == "gcs":
        built_environments.building(SERVER_ENV)
    else:
        kept = built_environments.wait_for(SERVER_ENV, timeout=600)
    host = local_cloud.new_host(like=CloudLike(CLOUD_OF[backend], lock_seconds=45), wait=False)
    if kept:
        built_environments.seed(SERVER_ENV, host)
    # Its own database: users, the admin password and gateway secrets are per server.
    database = f"mlflow_{backend}"
    settings = local_cloud.deployment_settings(host, backend, database=database)
    path = write_settings(tmp_path_factory.mktemp(backend) / "settings.yaml", settings)
    interrupted = ""
    try:
        try:
            if backend == "gcs":
                interrupted = interrupt_during_the_conda_build(path, host)
            first = fab("bootstrap", "--settings", str(path))
            built_environments.keep(SERVER_ENV, host)
        finally:
            if backend == "gcs":
                built_environments.building(SERVER_ENV, now=False)
        # The copies the tests make (deployed_clone, serving_copy) are of the host as it is
        # now: one power cycle here instead of one per copy.
        local_cloud.snapshot(host)
        wait_proxy_healthy(host, timeout=180)
        yield {
            "host": host,
            "settings": settings,
            "path": path,
            "backend": backend,
            "database": database,
            "first": first,
            "interrupted": interrupted,
            "cloud": local_cloud,
        }
    finally:
        local_cloud.remove_host(host)
        local_cloud.postgres.drop_database(database)


def interrupt_during_the_conda_build(path, host) -> str:
    """SIGKILL a bootstrap while the conda environment is being built; what it printed."""

    def building(_output: str) -> bool:
        return bool(
            host.ssh("ls /opt/mlflow/envs 2>/dev/null | head -1", check=False).stdout.strip()
        )

    output = kill_fab_when(["bootstrap", "--settings", str(path)], building)
    assert host.ssh("test -e /opt/mlflow/current && echo yes || echo no").stdout.strip() == "no"
    return output


def point_the_client_at(deployed, monkeypatch, cert) -> dict:
    """The MLflow client's environment for a bootstrapped host: its URL, the admin's
    credentials, its certificate (written to ``cert``); the same as a dict."""
    host, settings = deployed["host"], deployed["settings"]
    cert.write_text(host.ssh("sudo cat /etc/mlflow/tls/server.crt").stdout)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://{host.address}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", settings["admin_password"])
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert))
    return {
        "url": f"https://{host.address}",
        "cert": str(cert),
        "username": "admin",
        "password": settings["admin_password"],
    }


@pytest.fixture
def client_env(deployed, monkeypatch, tmp_path):
    return point_the_client_at(deployed, monkeypatch, tmp_path / "server.crt")


@pytest.fixture
def deployed_clone(deployed, local_cloud, host_factory, tmp_path):
    """A copy of the session's bootstrapped host for this backend, with a copy of its database,
    for one test that changes the host or the database (rotations, host keys, passwords): the
    shared host and its database never see the change, and the copy is removed afterwards.

    The copy keeps the host's login and host keys, conda environment, KEK and admin password;
    one ``fab bootstrap`` gives it its own address (certificate, server name) and database
    (env file), as a user re-bootstrapping a restored snapshot would. Its servers do not
    start at boot (``servers_not_started_at_boot``): that bootstrap starts them, all at
    once, rather than restarting each in turn after a start on the source's settings.
    Same keys as ``deployed``; ``first`` is that bootstrap's output.
    """
    source = deployed["host"]
    database = f"mlflow_clone_{secrets.token_hex(4)}"
    uri = local_cloud.postgres.copy_database(database, source=deployed["database"])
    clone = serving_copy(host_factory, source, prepare=servers_not_started_at_boot)
    try:
        settings = {
            **deployed["settings"],
            "host": clone.address,
            "ssh_key_file": str(clone.key_file),
            "known_hosts_file": str(clone.known_hosts),
            "backend_store_uri": uri,
        }
        path = write_settings(tmp_path / "clone-settings.yaml", settings)
        converged = fab("bootstrap", "--settings", str(path))
        yield {
            **deployed,
            "host": clone,
            "settings": settings,
            "path": path,
            "first": converged,
            "interrupted": "",
            "source": source,
        }
    finally:
        host_factory.discard(clone)
        local_cloud.postgres.drop_database(database)


@pytest.fixture
def clone_client_env(deployed_clone, monkeypatch, tmp_path):
    """``client_env`` for ``deployed_clone``: its URL, the admin's credentials, its certificate."""
    return point_the_client_at(deployed_clone, monkeypatch, tmp_path / "clone-server.crt")


@pytest.fixture(scope="session")
def built_environments(tmp_path_factory, worker_id):
    """Environments built once and copied into the hosts after them that would build the
    same: the session hosts' (the same locked environment.yml for both backends) and the
    upgrade tests' MLflow. One directory for the run's workers (under ``make test`` each
    worker's temporary directory is in the run's own)."""
    base = tmp_path_factory.getbasetemp()
    directory = (base if worker_id == "master" else base.parent) / "built-envs"
    directory.mkdir(exist_ok=True)
    return BuiltEnvironments(directory)
