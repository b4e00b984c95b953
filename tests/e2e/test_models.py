"""Registered models served as authenticated HTTP endpoints on the server's VM, for real.

The s3 host plays a t3.medium (4 GB, two tracking instances): it serves the models.
The gcs host plays an e2-small (2 GB, one instance): it has no room for an endpoint,
and says so before anything changes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from provisioning.layout import PATHS
from tests.e2e.kit import fab, post_resending_once, uncompiled_modules, write_settings

pytestmark = pytest.mark.e2e

MODEL = "e2e-iris"
BROKEN = "e2e-unbuildable"
ECHO = "e2e-echo"
#: Rows the tests send; the two model versions answer them differently.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def models_host(deployed, tmp_path_factory):
    """The s3 host, what the client needs to reach it; its endpoints removed afterwards."""
    host, settings = deployed["host"], deployed["settings"]
    tmp = tmp_path_factory.mktemp("models")
    cert = tmp / "server.crt"
    cert.write_text(host.ssh("sudo cat /etc/mlflow/tls/server.crt").stdout)
    # The follow timer checks every 10 s here (60 s by default).
    follow = write_settings(tmp / "follow.yaml", {**settings, "model_follow_seconds": 10})
    yield {
        **deployed,
        "url": f"https://{host.address}",
        "cert": str(cert),
        "auth": ("admin", settings["admin_password"]),
        "follow_path": str(follow),
        "versions": {},
    }
    for name in (MODEL, BROKEN, ECHO):
        fab("unserve-model", "--name", name, "--settings", str(deployed["path"]), check=False)


@pytest.fixture
def h(models_host, monkeypatch):
    """The models host, with the MLflow client pointed at it for this test."""
    for name, value in {
        "MLFLOW_TRACKING_URI": models_host["url"],
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": models_host["auth"][1],
        "MLFLOW_TRACKING_SERVER_CERT_PATH": models_host["cert"],
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return models_host


def log_iris(flip: bool):
    """An iris classifier (labels reversed when ``flip``), registered as a new version of MODEL."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, 2 - y if flip else y)
    mlflow.set_experiment("e2e-models")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL, input_example=x[:2]
        )
    return str(info.registered_model_version), [int(p) for p in model.predict(ROWS)]


def log_pyfunc(name: str, requirements: list[str]) -> str:
    """A model that returns its input, with exactly ``requirements``."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.set_experiment("e2e-models")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Echo(), registered_model_name=name,
            pip_requirements=requirements,
        )  # fmt: skip
    return str(info.registered_model_version)


def set_alias(version: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", version)


def invoke(h: dict, name: str = MODEL, auth=None, rows=ROWS) -> requests.Response:
    return requests.post(
        f"{h['url']}/models/{name}/invocations",
        json={"inputs": rows},
        auth=auth if auth is not None else h["auth"],
        verify=h["cert"],
        timeout=60,
    )


def predictions(h: dict, name: str = MODEL) -> list:
    response = invoke(h, name)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def instance_pids(host) -> dict[str, str]:
    out = host.ssh(
        "for u in $(systemctl list-units --plain --no-legend 'mlflow-model@*' 'mlflow-server@*'"
        " | awk '{print $1}'); do echo $u $(systemctl show -p MainPID --value $u); done"
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def serve(h: dict, *args: str, settings: str | None = None, check=True):
    started = time.monotonic()
    result = fab(
        "serve-model", "--name", *args, "--settings", settings or str(h["path"]), check=check
    )
    print(f"fab serve-model --name {' '.join(args)}: {time.monotonic() - started:.1f}s")
    return result


@dataclass
class InvocationLoop:
    """Invocations through the proxy from a thread, bounded, counting every failure and
    recording each change of the answer to ROWS[0]. A request whose reused connection
    nginx closed before any answer (a reload) is sent again once, as HTTP clients do
    (see tests.e2e.kit.RequestLoop), and counted in ``resent``."""

    h: dict
    pause: float = 0.05
    max_requests: int = 4000
    sent: int = 0
    resent: int = 0
    failures: list[str] = field(default_factory=list)
    answers: list[tuple[int, object]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> InvocationLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        session = requests.Session()
        session.auth = self.h["auth"]
        url = f"{self.h['url']}/models/{MODEL}/invocations"
        while not self._stop.is_set() and self.sent < self.max_requests:
            self.sent += 1
            try:
                response = self._post(session, url)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                else:
                    answer = response.json()["predictions"][0]
                    if not self.answers or self.answers[-1][1] != answer:
                        self.answers.append((self.sent, answer))
            except requests.RequestException as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            self._stop.wait(self.pause)

    def _post(self, session: requests.Session, url: str) -> requests.Response:
        response, resent = post_resending_once(session, url, {"inputs": ROWS[:1]}, self.h["cert"])
        self.resent += resent
        return response

    def wait_for(self, answer, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self.answers and self.answers[-1][1] == answer):
            assert time.monotonic() < deadline, f"no answer {answer} within {timeout}s: {self}"
            time.sleep(1)


def assert_lost_nothing(loop: InvocationLoop, at_least: int) -> None:
    assert loop.failures == [], f"{len(loop.failures)} of {loop.sent} failed: {loop.failures[:5]}"
    assert loop.sent >= at_least, f"only {loop.sent} requests sent"


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)  # the gcs host plays an e2-small
def test_an_e2_small_has_no_room_for_an_endpoint(deployed):
    refused = fab("serve-model", "--name", MODEL, "--version", "1",
                  "--settings", str(deployed["path"]), check=False)  # fmt: skip
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out
    # 2048 MB, less 1024 kept, 100 for mlflow-metrics, one tracking instance of 650: 274 MB.
    assert "no room for the model endpoints: they need 1024 MB" in out, out
    assert "the host has 274 MB for them" in out and "model_memory_mb" in out, out
    host = deployed["host"]
    assert host.ssh("test -e /etc/mlflow/models.json && echo yes || echo no").stdout.strip() == "no"


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_the_registered_model_answers_as_the_client_computes(h):
    version, expected = log_iris(flip=False)
    h["versions"]["first"] = (version, expected)
    set_alias(version)

    out = serve(h, MODEL, "--alias", "champion").stdout
    assert f"{MODEL} @champion: version {version}" in out, out
    assert f"endpoint: {h['url']}/models/{MODEL}/invocations" in out
    assert predictions(h) == expected

    # The same users and permissions as the registry: no credentials, or wrong ones, 401.
    assert invoke(h, auth=()).status_code == 401
    assert invoke(h, auth=("admin", "not-the-password")).status_code == 401
    for path in ("ping", "version"):
        assert (
            requests.get(
                f"{h['url']}/models/{MODEL}/{path}", verify=h["cert"], timeout=30
            ).status_code
            == 401
        )
        assert (
            requests.get(
                f"{h['url']}/models/{MODEL}/{path}", auth=h["auth"], verify=h["cert"], timeout=30
            ).status_code
            == 200
        )

    status = fab("models", "--settings", str(h["path"])).stdout
    assert f"running 1/1, asked @champion, loaded version {version}, env model " in status, status
    # Its environment is byte-compiled at its build: the scoring server cannot write a .pyc.
    env = status.split(", env model ", 1)[1].split()[0].rstrip(",;)")
    assert uncompiled_modules(h["host"], f"{PATHS['model_envs_dir']}/{env}/env") == []
    # Asked again: nothing to do, nothing restarted.
    before = instance_pids(h["host"])
    again = serve(h, MODEL, "--alias", "champion").stdout
    assert " 0 changed" in again, again
    assert instance_pids(h["host"]) == before


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_the_endpoint_has_the_registry_s_users(h):
    """Any MLflow user who may read the model may call it: the kit's basic_auth.ini gives
    every user READ by default (MLflow's default_permission is a floor that grants can
    only raise), so a plain user with no grant is let in, and wrong credentials are not."""
    from mlflow.server import get_app_client

    auth_client = get_app_client("basic-auth", tracking_uri=h["url"])
    username, password = "e2e-model-reader", "e2e-reader-password-1"
    with contextlib.suppress(Exception):  # the user may be left by an earlier run
        auth_client.create_user(username, password)
    assert invoke(h, auth=(username, password)).status_code == 200
    assert invoke(h, auth=(username, password + "x")).status_code == 401


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_the_endpoint_survives_kill_9_of_its_worker_and_a_reboot(h):
    host, expected = h["host"], h["versions"]["first"][1]
    unit = next(u for u in instance_pids(host) if u.startswith(f"mlflow-model@{MODEL}-"))
    port = unit.removesuffix(".service").rsplit("-", 1)[1]
    # Each instance is one single-worker process: the worker is the unit's main process.
    worker = instance_pids(host)[unit]
    started = time.monotonic()
    host.ssh(f"sudo kill -9 {worker}")
    ping = f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/ping"
    while host.ssh(ping, check=False).stdout.strip() != "200":
        assert time.monotonic() - started < 120, f"{unit} not answering 120 s after kill -9"
        time.sleep(0.5)
    assert instance_pids(host)[unit] not in ("0", worker)
    print(f"kill -9 of {unit}: answering again after {time.monotonic() - started:.1f}s")
    assert predictions(h) == expected

    started = time.monotonic()
    host.reboot()
    deadline = time.monotonic() + 180
    while True:
        try:
            if invoke(h).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the endpoint did not come back after a reboot"
        time.sleep(2)
    print(f"reboot: the endpoint answered again after {time.monotonic() - started:.1f}s")
    assert predictions(h) == expected


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_an_alias_switch_loses_no_request_and_answers_from_the_new_version(h):
    first, first_expected = h["versions"]["first"]
    version, expected = log_iris(flip=True)
    h["versions"]["second"] = (version, expected)
    assert expected != first_expected
    set_alias(version)

    with InvocationLoop(h) as loop:
        time.sleep(2)
        out = serve(h, MODEL, "--alias", "champion").stdout
        loop.wait_for(expected[0], 30)
        time.sleep(2)
    assert f"{MODEL}: version {version} on " in out and "replaced" in out, out
    assert_lost_nothing(loop, 50)
    assert [answer for _sent, answer in loop.answers] == [first_expected[0], expected[0]]
    assert predictions(h) == expected
    status = fab("models", "--settings", str(h["path"])).stdout
    assert f"loaded version {version}," in status, status


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_follow_alias_picks_up_a_move_made_in_the_ui(h):
    first, first_expected = h["versions"]["first"]
    second, second_expected = h["versions"]["second"]
    out = serve(h, MODEL, "--alias", "champion", "--follow-alias", settings=h["follow_path"]).stdout
    assert "follow timer on" in out, out
    with InvocationLoop(h) as loop:
        time.sleep(2)
        moved = time.monotonic()
        set_alias(first)  # as a user does in the UI
        loop.wait_for(first_expected[0], 120)
        print(f"alias moved: served after {time.monotonic() - moved:.1f}s")
        time.sleep(2)
    assert_lost_nothing(loop, 50)
    assert predictions(h) == first_expected
    status = fab("models", "--settings", h["follow_path"]).stdout
    assert f"asked @champion (following), loaded version {first}," in status, status
    # Served again without following: the timer stops.
    out = serve(h, MODEL, "--alias", "champion", settings=h["follow_path"]).stdout
    assert "follow timer off" in out, out
    assert (
        h["host"].ssh("systemctl is-enabled mlflow-models.timer || true").stdout.strip()
        == "disabled"
    )


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_a_model_that_cannot_be_built_fails_with_pip_s_error_and_changes_nothing(h):
    version = log_pyfunc(BROKEN, ["mlflow==3.17.2", "kit-e2e-no-such-package==0.0.1"])
    before = instance_pids(h["host"])
    desired = h["host"].ssh("sudo cat /etc/mlflow/models.json").stdout

    failed = serve(h, BROKEN, "--version", version, check=False)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1, out
    assert "No matching distribution found for kit-e2e-no-such-package==0.0.1" in out, out
    assert instance_pids(h["host"]) == before
    assert h["host"].ssh("sudo cat /etc/mlflow/models.json").stdout == desired
    assert predictions(h) == h["versions"]["first"][1]
    status = fab("models", "--settings", str(h["path"])).stdout
    assert BROKEN not in status and "running 1/1" in status, status


@pytest.mark.parametrize("deployed", ["s3"], indirect=True)  # the gcs host is an e2-small
def test_a_model_the_server_env_can_run_is_served_without_a_build(h):
    version = log_pyfunc(ECHO, ["mlflow==3.17.2"])
    out = serve(h, ECHO, "--version", version).stdout
    assert "environment" not in out.split("model endpoints", 1)[1].split("\n", 1)[0], out
    assert predictions(h, ECHO) == ROWS
    status = fab("models", "--settings", str(h["path"])).stdout
    assert f"asked version {version}, loaded version {version}, env server " in status, status

    fab("unserve-model", "--name", ECHO, "--settings", str(h["path"]))
    gone = invoke(h, ECHO)
    assert gone.status_code == 404, gone.text  # MLflow's own answer: no such route
    assert h["host"].ssh("ls /etc/nginx/mlflow-models").stdout.split() == [
        f"{MODEL}.location.conf",
        f"{MODEL}.upstream.conf",
    ]
    assert not [u for u in instance_pids(h["host"]) if u.startswith(f"mlflow-model@{ECHO}-")]
    assert (
        json.loads(h["host"].ssh("sudo cat /etc/mlflow/models.json").stdout)["endpoints"][0]["name"]
        == MODEL
    )
