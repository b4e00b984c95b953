"""What the end-to-end tests do as a user does: run fab, write settings, send traffic."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from provisioning.layout import PATHS, SERVER_UNIT_NAME
from provisioning.steps.conda import COMPLETE_MARKER
from tests.localcloud.services import BUCKET

REPO = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")


def fab(
    *args: str, timeout: float = 1800, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``fab`` as a user does, from the repository root."""
    result = subprocess.run(
        [FAB, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"fab {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def kill_fab_when(args: list[str], ready, timeout: float = 900) -> str:
    """Start ``fab ARGS`` and SIGKILL it (no clean-up on either side, as when the operator's
    machine dies) once ``ready(output_so_far)`` is true; return what it printed."""
    proc = subprocess.Popen(
        [FAB, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not ready("".join(output)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"fab {' '.join(args)} ended first:\n{''.join(output)}")
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    reader.join(timeout=10)
    return "".join(output)


def wait_proxy_healthy(host, timeout: float) -> None:
    """Until ``/health`` through the host's own nginx answers 200 (asked from the host)."""
    health = "curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health"
    deadline = time.monotonic() + timeout
    while host.ssh(health, check=False).stdout.strip() != "200":
        assert time.monotonic() < deadline, f"{host.name}: /health not 200 within {timeout:.0f}s"
        time.sleep(1)


def objects_under(deployed, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the local cloud's bucket of the deployment's backend."""
    cloud = deployed["cloud"]
    if deployed["backend"] == "s3":
        listed = cloud.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]
    return [b.name for b in cloud.gcs.client().bucket(BUCKET).list_blobs(prefix=prefix)]


def remove_objects_under(deployed, prefix: str) -> int:
    """Delete the objects ``objects_under`` lists; how many there were."""
    keys = objects_under(deployed, prefix)
    if deployed["backend"] == "s3":
        s3 = deployed["cloud"].s3.client()
        for key in keys:
            s3.delete_object(Bucket=BUCKET, Key=key)
    else:
        bucket = deployed["cloud"].gcs.client().bucket(BUCKET)
        for key in keys:
            bucket.delete_blob(key)
    return len(keys)


def serving_copy(host_factory, source, prepare=None):
    """A booted copy of a bootstrapped host (``host_factory.clone_of``, ``prepare`` run on
    the copy before it boots): of its snapshot, if it has one (the session's hosts), else
    of the host powered off for the copy; either way the source serves when this returns
    (other tests use it next)."""
    clone = host_factory.clone_of(source, prepare=prepare)
    wait_proxy_healthy(source, timeout=180)
    return clone


def servers_not_started_at_boot(host) -> None:
    """The copy's MLflow server instances disabled before it boots (``serving_copy``'s
    ``prepare``): its next bootstrap enables and starts them together, on what that
    bootstrap gives them, rather than restarting them one at a time (a surge instance
    beside a lone one) after they started at boot on what the copied host had."""
    wants = host.rootfs / "etc/systemd/system/multi-user.target.wants"
    disabled = list(wants.glob(SERVER_UNIT_NAME.replace("@", "@*")))
    assert disabled, f"no mlflow-server@ instance enabled in {wants}"
    for link in disabled:
        link.unlink()


class BuiltEnvironments:
    """Server environments one test built, copied into the hosts of the tests after it that
    would build the same one (the session's second host, the upgrade tests' MLflow).

    ``keep(key, host)`` copies the environment ``host``'s servers run (complete, with the
    kit's marker) into ``directory``; ``seed(key, host)`` copies it into another host's
    environments, where its play finds it built, as a second bootstrap on one host does.
    ``directory`` may be shared by the suite's workers (``make test``): what one worker
    keeps, the other seeds from once it is there; a copy lands whole (renamed into place,
    then indexed under its key) or not at all. The name is the same only for the same
    environment.yml, so a key must stand for the same settings; a wrong one costs a build
    (the play builds its own, and prunes the seeded one), never a wrong environment.
    Building an environment is what the bootstrap tests prove (on the gcs host, the
    offline host and a model's); the tests that seed are about what happens around it.
    """

    #: The hosts' environments, as seen from this machine under a host's root filesystem.
    ENVS = PATHS["envs_dir"].lstrip("/")

    def __init__(self, directory: Path, log=print) -> None:
        self.directory = directory
        self.log = log

    def _index(self, key: str) -> Path:
        return self.directory / "keys" / re.sub(r"[^A-Za-z0-9.]+", "-", key)

    def _building(self, key: str) -> Path:
        index = self._index(key)
        return index.with_name(f"{index.name}.building")

    def name_of(self, key: str) -> str | None:
        """The environment kept under ``key``, by this worker or another one."""
        index = self._index(key)
        return index.read_text().strip() if index.exists() else None

    def building(self, key: str, now: bool = True) -> None:
        """Mark (``now``) or unmark that a host of this worker is building the environment
        ``key`` names: the other worker, about to build the same, waits for it
        (``wait_for``) instead of building it beside it."""
        marker = self._building(key)
        if now:
            marker.parent.mkdir(exist_ok=True)
            marker.write_text(f"{os.getpid()}\n")
        else:
            marker.unlink(missing_ok=True)

    def wait_for(self, key: str, timeout: float) -> str | None:
        """The environment kept under ``key``: at once when kept, after waiting while the
        other worker builds it (up to ``timeout`` seconds), None when neither."""
        marker = self._building(key)
        started = time.monotonic()
        while self.name_of(key) is None and marker.exists():
            if time.monotonic() - started > timeout:
                self.log(f"env {key} still building elsewhere after {timeout:.0f}s: not waiting")
                break
            time.sleep(2)
        name = self.name_of(key)
        if name and time.monotonic() - started > 2:
            self.log(f"waited {time.monotonic() - started:.0f}s for env {name} ({key})")
        return name

    def keep(self, key: str, host) -> None:
        if self.name_of(key) is not None:
            return
        name = host.ssh(f"readlink {PATHS['current_env']}").stdout.strip().rsplit("/", 1)[-1]
        source = host.rootfs / self.ENVS / name
        if not (source / COMPLETE_MARKER).exists():
            return
        started = time.monotonic()
        target = self.directory / name
        if not target.exists():
            staging = self.directory / f".{name}.{os.getpid()}"
            _copy_tree(source, staging)
            try:
                staging.rename(target)
            except OSError:  # the other worker kept the same environment meanwhile
                subprocess.run(["rm", "-rf", "--one-file-system", str(staging)], check=True)
        index = self._index(key)
        index.parent.mkdir(exist_ok=True)
        written = index.with_name(f".{index.name}.{os.getpid()}")
        written.write_text(name + "\n")
        written.replace(index)
        self.log(f"kept env {name} ({key}) from {host.name}: {time.monotonic() - started:.0f}s")

    def seed(self, key: str, host) -> str | None:
        """The name of the environment copied into ``host`` (None when none is kept)."""
        name = self.name_of(key)
        if name is None:
            return None
        target = host.rootfs / self.ENVS / name
        if not target.exists():
            started = time.monotonic()
            # Whole or not at all: copied aside on the host's disk, then renamed into place.
            staging = host.rootfs / "var/tmp" / f"kit-e2e-seed-{name}"
            _copy_tree(self.directory / name, staging)
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            staging.rename(target)
            self.log(f"seeded env {name} ({key}) into {host.name}: "
                     f"{time.monotonic() - started:.0f}s")  # fmt: skip
        return name


def _copy_tree(source: Path, target: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(target)], check=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(target)], check=True)


def write_settings(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    path.chmod(0o600)
    return path


UNCOMPILED_SCRIPT = """
import importlib.util, pathlib, sys
site = next(pathlib.Path(sys.prefix).glob("lib/python3*/site-packages"))
for py in site.rglob("*.py"):
    if not pathlib.Path(importlib.util.cache_from_source(str(py))).exists():
        print(py)
"""


def uncompiled_modules(host, env: str = PATHS["current_env"]) -> list[str]:
    """The ``.py`` files of ``env``'s site-packages without their ``.pyc``: the servers'
    user cannot write one, so each such module is compiled again at every start."""
    return host.ssh(f"{env}/bin/python -c '{UNCOMPILED_SCRIPT}'").stdout.split()


def main_pids(host) -> dict[str, str]:
    out = host.ssh(
        "for u in $(systemctl list-units --plain --no-legend 'mlflow-server@*' | awk '{print $1}');"
        " do echo $u $(systemctl show -p MainPID --value $u); done"
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def healthy(client_env) -> bool:
    try:
        response = requests.get(f"{client_env['url']}/health", verify=client_env["cert"], timeout=5)
    except requests.RequestException:
        return False
    return response.status_code == 200


def wait_healthy(client_env, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(client_env):
            return
        time.sleep(1)
    raise AssertionError(f"{client_env['url']}/health not 200 within {timeout}s")


@dataclass
class RequestLoop:
    """Logging traffic through the proxy from a thread, bounded, counting every failure.

    Each request logs a metric (a POST, which nginx never retries on another
    instance) on one keep-alive session, with ``pause`` between requests; a pause
    longer than the server's keep-alive timeout exercises closed idle connections.

    One failure is not one: a request on a reused connection that the server closed
    as the request went out, before any byte of an answer (nginx closes its idle
    client connections on every reload). HTTP clients send such a request again on a
    new connection (RFC 9112 section 9.3.1; MLflow's own client through urllib3's
    Retry with ``allowed_methods=None``, mlflow/utils/request_utils.py), and so does
    this loop, once, counting it in ``resent``. A second such close, a reset, a
    timeout or any status but 200 is a failure.
    """

    client_env: dict
    run_id: str
    pause: float = 0.05
    max_requests: int = 20_000
    #: The name to ask the server for (SNI, Host) and to verify its certificate against,
    #: when the URL holds its address (a made-up domain this machine cannot resolve).
    server_name: str = ""
    sent: int = 0
    resent: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RequestLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        session = requests.Session()
        session.auth = (self.client_env["username"], self.client_env["password"])
        if self.server_name:
            session.mount("https://", ServerNameAdapter(self.server_name))
            session.headers["Host"] = self.server_name
        url = f"{self.client_env['url']}/api/2.0/mlflow/runs/log-metric"
        while not self._stop.is_set() and self.sent < self.max_requests:
            body = {"run_id": self.run_id, "key": "loop", "value": self.sent,
                    "timestamp": int(time.time() * 1000), "step": self.sent}  # fmt: skip
            self.sent += 1
            try:
                response = self._post(session, url, body)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
            except requests.RequestException as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            self._stop.wait(self.pause)

    def _post(self, session: requests.Session, url: str, body: dict) -> requests.Response:
        # verify per request: a session's own would lose to REQUESTS_CA_BUNDLE.
        response, resent = post_resending_once(session, url, body, self.client_env["cert"])
        self.resent += resent
        return response


def post_resending_once(
    session: requests.Session, url: str, body: dict, verify: str
) -> tuple[requests.Response, int]:
    """POST ``body``; sent again once when the reused connection closed before any answer
    (``closed_before_answering``). The response, and 1 when it was sent again."""
    try:
        return session.post(url, json=body, timeout=30, verify=verify), 0
    except requests.ConnectionError as error:
        if not closed_before_answering(error):
            raise
        return session.post(url, json=body, timeout=30, verify=verify), 1


class ServerNameAdapter(requests.adapters.HTTPAdapter):
    """HTTPS to an address, as to ``name``: SNI and the certificate check use the name."""

    def __init__(self, name: str):
        self.name = name
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs.update(server_hostname=self.name, assert_hostname=self.name)
        super().init_poolmanager(*args, **kwargs)


def closed_before_answering(error: requests.ConnectionError) -> bool:
    """The connection was closed with no byte of a response: http.client's RemoteDisconnected,
    or over TLS an EOF without the server's close_notify (ssl.SSLEOFError), which is what a
    request written into a keep-alive connection nginx closes at a graceful reload (its old
    worker shuts idle connections) can get instead."""
    import http.client
    import ssl

    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, http.client.RemoteDisconnected | ssl.SSLEOFError):
            return True
        cause = (cause.args[1] if len(cause.args) > 1 and isinstance(cause.args[1], BaseException)
                 else cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args
                 and isinstance(cause.args[0], BaseException) else None))  # fmt: skip
    return False


def kill_and_wait_back(host, unit: str, target: str, within: float = 15) -> None:
    """``kill -9`` the unit's main process or its uvicorn worker (its child); systemd must have
    started a new main process within ``within`` seconds, and the instance answer /health."""
    port = unit.removeprefix("mlflow-server@").removesuffix(".service")
    main = host.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
    victim = main
    if target == "worker":
        victim = host.ssh(f"pgrep -P {main} | head -n 1").stdout.strip()
        assert victim, f"{unit} (pid {main}) has no worker process"
    host.ssh(f"sudo kill -9 {victim}")
    deadline = time.monotonic() + within
    while True:
        now = host.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        if now not in ("0", main):
            break
        assert time.monotonic() < deadline, f"{unit} not restarted {within}s after kill -9 {target}"
        time.sleep(0.5)
    deadline = time.monotonic() + 120
    health = f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/health"
    while host.ssh(health, check=False).stdout.strip() != "200":
        assert time.monotonic() < deadline, f"{unit} restarted but /health not 200 within 120s"
        time.sleep(1)
