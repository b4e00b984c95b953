"""The health gate's smoke client against a real MLflow server: it proves the artifact
store works, so a server whose store cannot be written fails the gate with its own error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provisioning.steps.health import SMOKE_SCRIPT

pytestmark = pytest.mark.service  # two MLflow servers and two clients: ~40 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    started = []

    def start(artifacts: Path) -> str:
        port = free_port()
        log = (tmp_path / f"server-{port}.log").open("w")
        started.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{tmp_path}/mlflow-{port}.db",
                    "--artifacts-destination",
                    str(artifacts),
                    "--serve-artifacts",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                # As the kit's units run it (job_execution: false): no job runner, whose
                # seven consumer processes start beside the server and outlive it by ~30 s.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )  # fmt: skip
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server on {port} never answered /health")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def smoke(url: str) -> subprocess.CompletedProcess:
    # No retries of a 500 (the client's default backs off for minutes): the failure is at once.
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    given = {"tracking_uri": url, "username": "admin", "password": "unused", "env": env}
    return subprocess.run(
        [sys.executable, "-c", SMOKE_SCRIPT],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_writes_reads_back_and_deletes_an_artifact(mlflow_server, tmp_path):
    artifacts = tmp_path / "artifacts"
    result = smoke(mlflow_server(artifacts))
    assert result.returncode == 0, result.stderr
    assert "smoke ok" in result.stdout
    left = [p for p in artifacts.rglob("*") if p.is_file()]
    assert artifacts.exists() and left == []  # written, then deleted


def test_a_store_that_cannot_be_written_fails_the_smoke_check(mlflow_server, tmp_path):
    # A regular file where the store's directory should be: no user (root included) can write.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = smoke(mlflow_server(blocker / "artifacts"))
    assert result.returncode != 0
    assert "smoke ok" not in result.stdout
    assert "kit-smoke/probe.txt" in result.stderr or "500" in result.stderr
