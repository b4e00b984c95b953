"""Hosts the end-to-end tests share: bootstrapped once per artifact backend for the session."""

from __future__ import annotations

import pytest

from tests.e2e.kit import fab, kill_fab_when, write_settings
from tests.localcloud.cloudlike import CloudLike

#: Each backend's host plays one cloud's first boot: cloud-init, apt's locks held by an
#: unattended upgrade, a late sshd, the stack's machine type (the GCP one an e2-small).
CLOUD_OF = {"s3": "aws", "gcs": "gcp"}


@pytest.fixture(scope="session", params=["s3", "gcs"])
def deployed(request, local_cloud, tmp_path_factory):
    """A cloud-like host bootstrapped once per artifact backend, right after its first boot
    (before sshd answers); the gcs one after an interrupted first try."""
    backend = request.param
    host = local_cloud.new_host(like=CloudLike(CLOUD_OF[backend], lock_seconds=90), wait=False)
    settings = local_cloud.deployment_settings(host, backend)
    path = write_settings(tmp_path_factory.mktemp(backend) / "settings.yaml", settings)
    interrupted = ""
    try:
        if backend == "gcs":
            interrupted = interrupt_during_the_conda_build(path, host)
        first = fab("bootstrap", "--settings", str(path))
        yield {
            "host": host,
            "settings": settings,
            "path": path,
            "backend": backend,
            "first": first,
            "interrupted": interrupted,
            "cloud": local_cloud,
        }
    finally:
        local_cloud.remove_host(host)


def interrupt_during_the_conda_build(path, host) -> str:
    """SIGKILL a bootstrap while the conda environment is being built; what it printed."""

    def building(_output: str) -> bool:
        return bool(
            host.ssh("ls /opt/mlflow/envs 2>/dev/null | head -1", check=False).stdout.strip()
        )

    output = kill_fab_when(["bootstrap", "--settings", str(path)], building)
    assert host.ssh("test -e /opt/mlflow/current && echo yes || echo no").stdout.strip() == "no"
    return output


@pytest.fixture
def client_env(deployed, monkeypatch, tmp_path):
    host, settings = deployed["host"], deployed["settings"]
    cert = tmp_path / "server.crt"
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
