"""The server instances' sitecustomize (templates/kit_server_site.py) against a real MLflow
server on a real PostgreSQL with a small pool: many concurrent log_batch calls all land.

MLflow 3.17's ``SqlAlchemyStore.log_batch`` holds one connection of the tracking pool
while it takes a second, so as many concurrent calls as the pool holds each wait for a
second connection until SQLAlchemy's 30 s pool timeout and then fail ("QueuePool limit
of size 2 overflow 1 reached", a 400 the client does not retry). Without the
sitecustomize this test's 8 threads on a pool of 2+1 fail that way; with it the instance
runs half its pool's worth of requests at once and the rest wait their turn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from provisioning.layout import PATHS
from provisioning.render import render
from provisioning.sizing import Pool
from tests.localcloud.procs import free_port, wait_healthy

pytestmark = pytest.mark.service  # a PostgreSQL and an MLflow server: ~20 s

THREADS, BATCHES = 8, 4
POOL = Pool(size=2, max_overflow=1)


def start_server(tmp_path: Path, uri: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port("127.0.0.1")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", uri,
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env={**os.environ, **env},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(server, url, tmp_path / "server.log")
    return server, url


def test_concurrent_log_batch_beyond_the_pool_all_land(postgres, tmp_path, monkeypatch):
    site = tmp_path / "server-site"
    site.mkdir()
    # What bootstrap installs at PATHS["server_sitecustomize"], rendered the same way.
    assert PATHS["server_sitecustomize"] == f"{PATHS['server_site_dir']}/sitecustomize.py"
    (site / "sitecustomize.py").write_text(render("kit_server_site.py", {}))
    assert POOL.wsgi_threads == 1
    env = {
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL.size),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(POOL.max_overflow),
        "PYTHONPATH": str(site),
        "MLFLOW_KIT_WSGI_THREADS": str(POOL.wsgi_threads),
        # As the kit's units run it (job_execution: false): no job runner processes.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    server, url = start_server(tmp_path, postgres.uri(), env)
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        # A failure shows at once (no retries of a 400 anyway) and no call waits forever.
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        client = MlflowClient(url)
        experiment = client.create_experiment("threads")
        runs = [client.create_run(experiment).info.run_id for _ in range(THREADS)]
        failures: list[str] = []
        start = threading.Barrier(THREADS)

        def work(run_id: str) -> None:
            start.wait()
            for batch in range(BATCHES):
                metrics = [Metric(f"m{i}", float(batch), 0, batch) for i in range(10)]
                try:
                    client.log_batch(run_id, metrics=metrics)
                except Exception as error:  # noqa: BLE001 - collected, asserted below
                    failures.append(str(error)[:200])

        threads = [threading.Thread(target=work, args=(run,)) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert failures == [], failures[:3]
        for run in runs:
            steps = sorted(m.step for m in client.get_metric_history(run, "m9"))
            assert steps == list(range(BATCHES))
        assert "QueuePool limit" not in (tmp_path / "server.log").read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
