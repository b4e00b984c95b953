"""Suite-wide fixtures: isolation from the user's own SSH and cloud config, tiers, the local cloud."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

TIERS = ("unit", "service", "e2e")
#: Set by .ci/run: a machine that cannot run the local cloud fails instead of skipping.
REQUIRE_LOCALCLOUD = os.environ.get("MLFLOW_KIT_REQUIRE_LOCALCLOUD") == "1"
_CLOUD_ENV_PREFIXES = ("AWS_", "GOOGLE_", "CLOUDSDK_", "PULUMI_", "MLFLOW_TRACKING_")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    # Tests without a tier marker are unit tests.
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)
        item.add_marker(pytest.mark.xdist_group(worker_group(item)))


def worker_group(item) -> str:
    """Which tests one worker runs in order under ``pytest -n 2 --dist loadgroup`` (make
    test): the end-to-end tests on the s3 host together (the host is bootstrapped once per
    worker that asks for it), the other end-to-end tests together (the gcs host, the local
    cloud's own tests, single sign-on), and the unit and service tiers. xdist hands the
    groups out largest first by number of tests (``loadscopereorder``): the unit and
    service tiers to one worker, the other end-to-end tests (more tests than the s3
    host's) to the other, and the s3 host's to the first worker that runs short of work,
    the one that ran the unit and service tiers."""
    # A test (the worker_group marker) or a module (WORKER_GROUP) may name its group, to
    # even the two workers out.
    marker = item.get_closest_marker("worker_group")
    named = (
        marker.args[0] if marker else getattr(getattr(item, "module", None), "WORKER_GROUP", None)
    )
    if named:
        return named
    if not item.get_closest_marker("e2e"):
        return "unit-and-service"
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("deployed") == "s3":
        return "e2e-s3"
    return "e2e-other"


#: When this process started: a worker's share of ``make test`` is from here to its end.
_STARTED = time.monotonic()
_GROUPS_RUN: set[str] = set()
#: On the controller: each worker's (seconds from its start to its end, groups it ran).
_WORKERS: dict[str, tuple[float, list[str]]] = {}


def pytest_runtest_setup(item):
    group = item.get_closest_marker("xdist_group")
    if group:
        _GROUPS_RUN.add(group.args[0])


def pytest_sessionfinish(session):
    # On an xdist worker, ``workeroutput`` goes back to the controller when it stops.
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["mlflow_kit_worker"] = (time.monotonic() - _STARTED, sorted(_GROUPS_RUN))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    share = getattr(node, "workeroutput", {}).get("mlflow_kit_worker")
    if share:
        _WORKERS[node.gateway.id] = share


def pytest_terminal_summary(terminalreporter):
    """Each worker's time, start to end (its session fixtures' set-up and tear-down
    included), and the groups it ran: the two shares of ``make test`` side by side."""
    for worker, (seconds, groups) in sorted(_WORKERS.items()):
        terminalreporter.write_line(
            f"worker {worker}: {seconds:.0f} s, groups {', '.join(groups) or 'none'}"
        )


@pytest.fixture(autouse=True)
def _isolated_from_user_config(monkeypatch, tmp_path_factory):
    """Keep the user's ~/.ssh/config, cloud credentials and Pulumi login out of every test."""
    for name in list(os.environ):
        if name.startswith(_CLOUD_ENV_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    empty = tmp_path_factory.getbasetemp() / "empty-config"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "aws-credentials"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(empty / "gcloud"))
    monkeypatch.setenv("PULUMI_HOME", str(empty / "pulumi"))
    # The kit's own known_hosts lives under XDG_STATE_HOME.
    monkeypatch.setenv("XDG_STATE_HOME", str(empty / "state"))


def localcloud_unavailable() -> str | None:
    """Why this machine cannot run the local cloud, or None when it can."""
    if os.geteuid() != 0:
        return "the local cloud needs root (network namespaces, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "ip", "nft", "openssl", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs it)"
    if not Path("/dev/net/tun").exists() and not Path("/proc/sys/net/ipv4/ip_forward").exists():
        return "no network stack for namespaces"
    return None


@pytest.fixture(scope="session")
def local_cloud():
    """PostgreSQL, S3 and GCS stand-ins for the whole session, stopped by PID at the end."""
    reason = localcloud_unavailable()
    if reason:
        if REQUIRE_LOCALCLOUD:
            pytest.fail(f"cannot run the local cloud: {reason}")
        pytest.skip(f"cannot run the local cloud: {reason}")
    from tests.localcloud.cloud import LocalCloud

    cloud = LocalCloud.up(tied=True)
    try:
        yield cloud
    finally:
        cloud.down()


@pytest.fixture
def fresh_host(local_cloud):
    """A pristine Debian 12 host for one test, removed afterwards."""
    host = local_cloud.new_host()
    try:
        yield host
    finally:
        local_cloud.remove_host(host)


@pytest.fixture(scope="session")
def host_factory(local_cloud):
    """Prepared hosts for the session (``tests/localcloud/factory.py``): a template is
    prepared once per key, each ``host_factory.clone(key, prepare)`` boots a copy of it."""
    from tests.localcloud.factory import HostFactory

    factory = HostFactory(local_cloud)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def gcs(tmp_path):
    """The local cloud's GCS emulator on loopback, with the artifact bucket, for one test."""
    from tests.localcloud.services import GcsEmulator

    server = GcsEmulator("127.0.0.1", tmp_path, tied=True)
    server.start()
    yield server
    server.stop()
