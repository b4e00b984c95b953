"""Hosts the end-to-end tests share: bootstrapped once per artifact backend for the session."""

from __future__ import annotations

import pytest

from tests.e2e.kit import fab, kill_fab_when, write_settings


@pytest.fixture(scope="session", params=["s3", "gcs"])
def deployed(request, local_cloud, tmp_path_factory):
    """A host bootstrapped once per artifact backend; the gcs one after an interrupted first try."""
    backend = request.param
    host = local_cloud.new_host()
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
