"""The health gate: /health through nginx, then the MLflow client logs and reads back a metric."""

from __future__ import annotations

import shlex
import time

from provisioning import facts
from provisioning.layout import PATHS
from provisioning.play import Outcome, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host

HEALTH_TIMEOUT_S = 180
JOURNAL_LINES = 40
SMOKE_CHECK = "MLflow client smoke check"

SMOKE_SCRIPT = """
import os, sys
os.environ["MLFLOW_TRACKING_USERNAME"] = sys.stdin.readline().strip()
os.environ["MLFLOW_TRACKING_PASSWORD"] = sys.stdin.readline().strip()
os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
import warnings; warnings.filterwarnings("ignore")
from mlflow.tracking import MlflowClient
client = MlflowClient("https://127.0.0.1")
experiment = client.get_experiment_by_name("kit-smoke-check")
experiment_id = experiment.experiment_id if experiment else client.create_experiment("kit-smoke-check")
run = client.create_run(experiment_id)
client.log_metric(run.info.run_id, "smoke", 1.0)
client.set_terminated(run.info.run_id)
value = client.get_run(run.info.run_id).data.metrics["smoke"]
assert value == 1.0, value
print(f"smoke ok: logged and read back a metric in experiment {experiment_id}")
"""


def server_journal(host: Host) -> str:
    return host.read(facts.journal("-u 'mlflow-server@*'", JOURNAL_LINES))


def wait_healthy(host: Host, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Until /health answers 200 through nginx; RemoteError with the servers' journal after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        code = host.read(facts.HEALTH_CODE)
        if code == "200":
            return
        if time.monotonic() > deadline:
            raise host.error(
                facts.HEALTH_CODE.command,
                1,
                f"/health answered {code or 'nothing'} after {timeout:.0f}s\n"
                + server_journal(host),
            )
        time.sleep(1)


def gate(host: Host, deployment: Deployment) -> Outcome[None]:
    """/health through nginx, then the MLflow client logs a metric and reads it back."""
    wait_healthy(host)
    # The client reads the credentials from its stdin, never from its command line.
    result = host.run(
        f"{PATHS['current_env']}/bin/python -c {shlex.quote(SMOKE_SCRIPT)}",
        sudo=False,
        check=False,
        stdin=f"{deployment.admin_username}\n{deployment.admin_password.reveal()}\n",
        timeout=300,
    )
    if result.exited != 0 or "smoke ok" not in result.stdout:
        raise host.error(
            SMOKE_CHECK,
            result.exited,
            (result.stderr or result.stdout) + "\n" + server_journal(host),
        )
    return unchanged(result.stdout.strip().splitlines()[-1])
