"""A group of two servers behind the local cloud's load balancer: a rolling bootstrap that
restarts every server loses no request, drains each host in turn and takes it back; a
browser-like session is answered by both hosts; a second roll changes and drains nothing;
a rolling upgrade to another MLflow loses no request and no metric, though the first host
migrates the shared database while the second still serves the old MLflow on it.

Cheap by construction: two copies of the session's gcs host (not fresh hosts), one copy
of its database that both share, as a group's servers do; each copy is given the MLflow
environment that test_upgrade.py's upgrade on the gcs host built (``BuiltEnvironments``;
this module's name sorts after it), so the roll under test does not build it twice. (The
gcs host's tests run on the other worker than the s3 host's, tests/conftest.py.)
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.e2e.kit import RequestLoop, fab, write_settings
from tests.e2e.test_upgrade import NEW, NEW_ENV, OLD, step_line, the_registry_completes
from tests.localcloud.balancer import Balancer

pytestmark = pytest.mark.e2e

#: The balancer checks every 2 s and needs 2 failures or successes: what the hosts wait.
DRAIN_S, HEALTHY_S = 8, 6


def serving(settings_path, host) -> set[str]:
    """The MLflow versions the host's running instances run, as ``fab status`` reads them
    from their processes (a restart still pending shows)."""
    status = fab("-H", host.address, "status", "--settings", str(settings_path)).stdout
    assert "restart pending" not in status, status
    return set(re.findall(r"instance \d+\s+MLflow (\S+), env ", status))


def one_after_the_other(balancer, since: float, *hosts) -> list:
    """The balancer's events since ``since`` if they are each host going down and coming
    back up, one host after the other in order (else an assertion names what it saw)."""
    seen = [(e["backend"].split(":")[0], e["state"]) for e in balancer.events() if e["t"] >= since]
    expected = [(h.address, state) for h in hosts for state in ("down", "up")]
    assert seen == expected, seen
    return seen


def timed(timings: dict, name: str, started: float) -> float:
    timings[name] = round(time.monotonic() - started, 1)
    return time.monotonic()


@pytest.mark.parametrize("deployed", ["gcs"], indirect=True)
def test_a_rolling_bootstrap_and_upgrade_behind_the_balancer(
    deployed, local_cloud, host_factory, tmp_path, built_environments
):
    timings: dict[str, float] = {}
    t = time.monotonic()
    source = deployed["host"]
    # The shared secrets of the group: those the source host generated and the copies hold.
    flask_key = source.ssh("sudo cat /etc/mlflow/flask-secret-key").stdout.strip()
    kek = source.ssh("sudo cat /etc/mlflow/kek").stdout.strip().partition(" ")[2]
    database = "mlflow_group"
    uri = local_cloud.postgres.copy_database(database, source=deployed["database"])
    a = host_factory.clone_of(source)
    b = host_factory.clone_of(source)
    t = timed(timings, "two copies and a database copy", t)
    balancer = Balancer(local_cloud.postgres.address, [f"{a.address}:443", f"{b.address}:443"],
                        tmp_path, tied=True)  # fmt: skip
    try:
        known = tmp_path / "known_hosts"
        known.write_text(a.known_hosts.read_text() + b.known_hosts.read_text())
        settings = {k: v for k, v in deployed["settings"].items() if k != "host"}
        settings.update(
            hosts=[a.address, b.address],
            # What users reach, and so what the servers accept in the Host header.
            public_host=local_cloud.postgres.address,
            ssh_key_file=str(a.key_file),
            known_hosts_file=str(known),
            backend_store_uri=uri,
            flask_secret_key=flask_key,
            kek_passphrase=kek,
            drain_seconds=DRAIN_S,
            healthy_seconds=HEALTHY_S,
        )
        path = write_settings(tmp_path / "group.yaml", settings)
        first = fab("bootstrap", "--settings", str(path))
        print(first.stdout[-3000:])
        t = timed(timings, "first group bootstrap (own addresses, shared database)", t)

        balancer.start()
        env = {"url": balancer.url, "cert": True, "username": "admin",
               "password": settings["admin_password"]}  # fmt: skip
        auth = (env["username"], env["password"])
        run = requests.post(f"{balancer.url}/api/2.0/mlflow/runs/create", auth=auth,
                            json={"experiment_id": "0"}, timeout=30)  # fmt: skip
        assert run.status_code == 200, run.text
        run_id = run.json()["run"]["info"]["run_id"]

        # A change every server reads (its connection pools): each instance restarts.
        changed = write_settings(
            tmp_path / "group-changed.yaml", {**settings, "db_max_connections": 90}
        )
        since = time.time()
        with RequestLoop(env, run_id, pause=0.05) as loop:
            rolled = fab("bootstrap", "--settings", str(changed))
            time.sleep(2)
        print(rolled.stdout[-6000:])
        t = timed(timings, "rolling bootstrap with a restart, under load", t)
        assert loop.failures == [], loop.failures[:5]
        assert loop.sent > 100, loop.sent
        out = rolled.stdout
        for host in (a, b):
            assert f"[{host.address}] drain " in out and f"[{host.address}] un-drain " in out
            # Out of the balancer, the host's lone instance restarts without a surge one.
            assert re.search(rf"^\[{re.escape(host.address)}\] mlflow servers +\.\.\. out of the "
                             "load balancer: 5001 restarts without a surge instance$", out, re.M)  # fmt: skip
        assert "drained: " + ", ".join([a.address, b.address]) in out
        # The balancer saw each host go and come back, one after the other.
        assert one_after_the_other(balancer, since, a, b)
        # A browser's session: basic auth on every request, no server-side session needed.
        session = requests.Session()
        session.auth = auth
        before = len(balancer.answered_by())
        for _ in range(12):
            answer = session.get(f"{balancer.url}/ajax-api/2.0/mlflow/experiments/search",
                                 params={"max_results": 10}, timeout=30)  # fmt: skip
            assert answer.status_code == 200, answer.text[:200]
        answered = {u.split(":")[0] for u in balancer.answered_by()[before:]}
        assert answered == {a.address, b.address}
        t = timed(timings, "browser-like session on both hosts", t)

        again = fab("bootstrap", "--settings", str(changed))
        print(again.stdout[-3000:])
        t = timed(timings, "second rolling bootstrap", t)
        assert "0 changed, drained: none" in again.stdout
        assert "] drain " not in again.stdout
        assert [
            e
            for e in balancer.events()
            if e["t"] >= time.time() - timings["second rolling bootstrap"]
        ] == []

        # A rolling upgrade under load. Host a backs up and migrates the shared database
        # while its servers and host b's (MLflow OLD) keep serving on it; then each host
        # switches behind its drain.
        for host in (a, b):
            the_registry_completes(host, NEW, changed)
            built_environments.seed(NEW_ENV, host)
        upgrade_run = requests.post(f"{balancer.url}/api/2.0/mlflow/runs/create", auth=auth,
                                    json={"experiment_id": "0"}, timeout=30)  # fmt: skip
        assert serving(changed, a) == serving(changed, b) == {OLD}
        since = time.time()
        with RequestLoop(env, upgrade_run.json()["run"]["info"]["run_id"],
                         pause=0.1) as upgrade_loop:  # fmt: skip
            upgraded = fab("upgrade", "--mlflow-version", NEW, "--settings", str(changed),
                           check=False)  # fmt: skip
            time.sleep(2)
        print(upgraded.stdout[-6000:])
        t = timed(timings, f"rolling upgrade {OLD} -> {NEW} under load", t)
        assert upgraded.returncode == 0, upgraded.stdout[-3000:] + upgraded.stderr[-3000:]
        assert upgrade_loop.failures == [], upgrade_loop.failures[:5]
        assert upgrade_loop.sent > 100, upgrade_loop.sent
        out = upgraded.stdout
        host_a, host_b = out.split(f"[{b.address}] host 2 of 2")
        assert f"MLflow {NEW} migrates" in step_line(host_a, "schema check")
        assert f"schema at MLflow {NEW}" in step_line(host_a, "schema migration")
        assert "backup before migration" in host_a and "backup before migration" not in host_b
        assert f"schema current for MLflow {NEW}" in step_line(host_b, "schema check")
        for host in (a, b):
            assert f"[{host.address}] drain " in out and f"[{host.address}] un-drain " in out
        assert one_after_the_other(balancer, since, a, b)
        # Every metric the loop logged is there, once, whichever host took it.
        history = requests.get(
            f"{balancer.url}/api/2.0/mlflow/metrics/get-history", auth=auth, timeout=30,
            params={"run_id": upgrade_loop.run_id, "metric_key": "loop", "max_results": 25000},
        ).json()["metrics"]  # fmt: skip
        assert sorted(int(m["value"]) for m in history) == list(range(upgrade_loop.sent))
        for host in (a, b):
            assert serving(changed, host) == {NEW}, host.address
    finally:
        balancer.stop()
        host_factory.discard(a)
        host_factory.discard(b)
        local_cloud.postgres.drop_database(database)
        sent = [x.sent for x in (locals().get("loop"), locals().get("upgrade_loop")) if x]
        print(f"requests sent (bootstrap roll, upgrade roll): {sent}, timings: {timings}")
