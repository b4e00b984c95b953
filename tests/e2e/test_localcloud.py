"""The local cloud itself: a fresh host behaves like a fresh cloud VM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning.connection import connect
from provisioning.steps.packages import trust_ca_certs
from provisioning.transport import Host
from tests.localcloud.cloud import RUNS_ROOT, extra_ca_certs
from tests.localcloud.procs import alive

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

SMOKE_UNIT = """[Unit]
Description=local cloud smoke unit
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
"""


def test_fresh_host_boots_reboots_and_keeps_enabled_units(fresh_host):
    assert fresh_host.ssh("systemctl is-system-running").stdout.strip() == "running"
    assert fresh_host.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    fresh_host.ssh("sudo tee /etc/systemd/system/kit-smoke.service >/dev/null", input=SMOKE_UNIT)
    fresh_host.ssh("sudo systemctl daemon-reload && sudo systemctl enable --now kit-smoke.service")
    before = fresh_host.boot_id()

    after = fresh_host.reboot()

    assert after != before
    assert fresh_host.ssh("systemctl is-active kit-smoke.service").stdout.strip() == "active"
    assert fresh_host.ssh("systemctl is-system-running").stdout.strip() == "running"


def test_host_cannot_see_the_machines_files(fresh_host):
    marker = REPO / "pyproject.toml"
    assert marker.exists()
    result = fresh_host.ssh(f"test -e {marker} && echo visible || echo hidden")
    assert result.stdout.strip() == "hidden"
    # Its own address, not the machine's: the services' address is a different host.
    addresses = fresh_host.ssh("ip -4 -o addr show dev eth0").stdout
    assert fresh_host.address in addresses


def test_guest_reaches_postgres_over_tls_and_both_object_stores(local_cloud, fresh_host):
    pg = local_cloud.postgres
    tls = fresh_host.ssh(
        f"echo | openssl s_client -starttls postgres -connect {pg.address}:{pg.port} 2>/dev/null"
        " | grep -c 'BEGIN CERTIFICATE'",
        check=False,
    )
    assert tls.stdout.strip() == "1", tls.stderr
    s3 = fresh_host.ssh(f"curl -sS {local_cloud.s3.endpoint}/mlflow-artifacts")
    assert "ListBucketResult" in s3.stdout
    gcs = fresh_host.ssh(f"curl -sS {local_cloud.gcs.endpoint}/storage/v1/b/mlflow-artifacts")
    assert json.loads(gcs.stdout)["name"] == "mlflow-artifacts"


def test_guest_installs_from_the_package_registry_with_the_extra_ca_certs(fresh_host):
    with connect(
        host=fresh_host.address,
        user=fresh_host.user,
        key_file=str(fresh_host.key_file),
        known_hosts_file=str(fresh_host.known_hosts),
    ) as conn:
        host = Host(conn)
        first = trust_ca_certs(host, tuple(extra_ca_certs()))
        again = trust_ca_certs(host, tuple(extra_ca_certs()))
    assert first.changed == bool(extra_ca_certs())
    assert not again.changed
    result = fresh_host.ssh(
        "python3 -m venv /tmp/v && /tmp/v/bin/pip download --no-deps -q -d /tmp/d six && ls /tmp/d",
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "six-" in result.stdout


def test_a_second_host_is_pristine(local_cloud):
    first = local_cloud.new_host()
    try:
        first.ssh("echo from-first | sudo tee /etc/kit-marker >/dev/null")
        assert first.ssh("cat /etc/kit-marker").stdout.strip() == "from-first"
    finally:
        local_cloud.remove_host(first)
    second = local_cloud.new_host()
    try:
        assert (
            second.ssh("test -e /etc/kit-marker && echo present || echo absent").stdout.strip()
            == "absent"
        )
    finally:
        local_cloud.remove_host(second)


def test_interrupting_a_test_run_leaves_nothing_running():
    """SIGINT to a pytest run that holds a local cloud: every process stops, links go."""
    # Under the runs root: PostgreSQL runs as its own user and must reach its directory.
    run_dir = RUNS_ROOT / f"interrupted-{os.getpid()}"
    env = dict(os.environ, MLFLOW_KIT_INTERRUPT_RUN_DIR=str(run_dir))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests/e2e/interrupt_target.py"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = run_dir / "ready"
    deadline = time.monotonic() + 180
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ready.exists(), proc.communicate(timeout=60)[0][-3000:]
    state = json.loads((run_dir / "state.json").read_text())
    pids = [state[s]["pid"] for s in ("postgres", "s3", "gcs")]
    pids += [h["supervisor_pid"] for h in state["hosts"]]
    nspawn = subprocess.run(
        ["pgrep", "-f", f"machine=mlk-host-{state['hosts'][0]['slot']} "],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert pids and nspawn and all(alive(pid) for pid in pids)

    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]

    still = [pid for pid in pids + [int(p) for p in nspawn] if alive(pid)]
    assert still == [], output[-3000:]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"mlk-{state['services_slot']} " not in netns + " "
    assert f"mlk-{state['hosts'][0]['slot']} " not in netns + " "
    assert not run_dir.exists()
