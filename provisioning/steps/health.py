"""The health gate: /health through nginx, then the MLflow client writes, reads back and
deletes a metric and an artifact, so a broken bucket binding fails here with its own error."""

from __future__ import annotations

import json
import shlex

from provisioning import facts, waiting
from provisioning.layout import PATHS
from provisioning.play import Outcome, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host

HEALTH_TIMEOUT_S = 180
JOURNAL_LINES = 40
SMOKE_CHECK = "MLflow client smoke check"

#: Runs on the host with the server's own environment. Its input (credentials, and the
#: storage settings a direct-artifact client needs) arrives as JSON on stdin.
SMOKE_SCRIPT = """
import json, os, sys, tempfile, uuid
given = json.load(sys.stdin)
os.environ.update(given["env"])
os.environ.update(MLFLOW_TRACKING_URI=given.get("tracking_uri", "https://127.0.0.1"),
                  MLFLOW_TRACKING_INSECURE_TLS="true", MLFLOW_TRACKING_USERNAME=given["username"],
                  MLFLOW_TRACKING_PASSWORD=given["password"])
import warnings; warnings.filterwarnings("ignore")
from mlflow.tracking import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
client = MlflowClient()
experiment = client.get_experiment_by_name("kit-smoke-check")
experiment_id = experiment.experiment_id if experiment else client.create_experiment("kit-smoke-check")
run = client.create_run(experiment_id)
client.log_metric(run.info.run_id, "smoke", 1.0)
value = client.get_run(run.info.run_id).data.metrics["smoke"]
assert value == 1.0, f"metric read back as {value}"
probe = f"kit smoke probe {uuid.uuid4()}"
client.log_text(run.info.run_id, probe, "kit-smoke/probe.txt")
with tempfile.TemporaryDirectory() as tmp:
    path = client.download_artifacts(run.info.run_id, "kit-smoke/probe.txt", tmp)
    with open(path) as handle:
        assert handle.read() == probe, "artifact read back differs"
get_artifact_repository(run.info.artifact_uri).delete_artifacts("kit-smoke")
left = [f.path for f in client.list_artifacts(run.info.run_id, "kit-smoke")]
assert not left, f"artifacts left after delete: {left}"
client.set_terminated(run.info.run_id)
print(f"smoke ok: a metric and an artifact written, read back and deleted in experiment {experiment_id}")
"""


def smoke_input(deployment: Deployment) -> str:
    """What the smoke client reads on stdin: credentials, and the storage client's settings
    (with direct artifacts the client itself writes to the bucket)."""
    env = dict(deployment.storage_env)
    if not deployment.telemetry:
        env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    env.update({k: v.reveal() for k, v in deployment.storage_secret_env.items()})
    return json.dumps(
        {
            "username": deployment.admin_username,
            "password": deployment.admin_password.reveal(),
            "env": env,
        }
    )


def server_journal(host: Host) -> str:
    return host.read(facts.journal("-u 'mlflow-server@*'", JOURNAL_LINES))


def wait_healthy(host: Host, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Until /health answers 200 through nginx; RemoteError with the servers' journal after ``timeout``."""
    waiting.until(
        host,
        lambda: host.read(facts.HEALTH_CODE),
        lambda code: code == "200",
        timeout=timeout,
        poll=1,
        late=lambda code: host.error(
            facts.HEALTH_CODE.command,
            1,
            f"/health answered {code or 'nothing'} after {timeout:.0f}s\n" + server_journal(host),
        ),
    )


def gate(host: Host, deployment: Deployment) -> Outcome[None]:
    """/health through nginx, then the MLflow client logs a metric and reads it back."""
    wait_healthy(host)
    # The client reads the credentials from its stdin, never from its command line.
    result = host.run(
        f"{PATHS['current_env']}/bin/python -c {shlex.quote(SMOKE_SCRIPT)}",
        sudo=False,
        check=False,
        stdin=smoke_input(deployment),
        timeout=300,
    )
    if result.exited != 0 or "smoke ok" not in result.stdout:
        raise host.error(
            SMOKE_CHECK,
            result.exited,
            (result.stderr or result.stdout) + "\n" + server_journal(host),
        )
    return unchanged(result.stdout.strip().splitlines()[-1])
