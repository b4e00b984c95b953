"""A group's hosts share one database: each sizes its pools for the whole group.

What a user notices: a group of N hosts that each took the database's whole limit would
open N times ``max_connections`` under load, and the database refuses connections
("FATAL: sorry, too many clients already") on whichever host asks last.
"""

from __future__ import annotations

import pytest
import yaml

from provisioning import facts, sizing
from provisioning.render import context, render
from provisioning.settings import Deployment, SettingsError, deployment_from_file
from provisioning.settings.group import group_host
from provisioning.steps import servers
from tests.unit.conftest import valid_settings
from tests.unit.test_templates import parse_env_file

SHARED = {"flask_secret_key": "f" * 32, "kek_passphrase": "k" * 40}
HOSTS = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
BALANCER = "mlflow.example.com"


def group(hosts=HOSTS, **changes) -> Deployment:
    settings = valid_settings(host=hosts[0], hosts=hosts, public_host=BALANCER, **SHARED)
    return Deployment(**{**settings, **changes})


def env_of(deployment: Deployment, ports: list[int], job_execution=False) -> dict[str, str]:
    ctx = context(
        deployment,
        server_ports=ports,
        flask_secret_key="k" * 64,
        job_execution=job_execution,
        kek_passphrase="p" * 40,
    )
    return parse_env_file(render("mlflow.env.j2", ctx))


def connections_of(env: dict[str, str], instances: int, job_execution=False) -> int:
    """What one host's instances may open at most: every engine's pool plus overflow, and
    each instance's listener."""
    pool = sizing.Pool(
        int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]),
        int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]),
    )
    return instances * pool.per_instance(sizing.engines(job_execution))


@pytest.mark.parametrize(
    ("max_connections", "ports"),
    [(100, [5001, 5002]), (100, [5001]), (60, [5001, 5002]), (200, [5001, 5002, 5003, 5004])],
)
def test_one_host_of_a_group_leaves_room_for_the_others(max_connections, ports):
    whole = group(db_max_connections=max_connections)
    envs = [env_of(group_host(whole, h), ports) for h in HOSTS]
    assert len({(e["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) for e in envs}) == 1
    budget = max_connections - sizing.DB_RESERVED_CONNECTIONS
    # Every host at its pools' limit, and the host being rolled with its surge instance
    # (a lone instance restarts beside a temporary one) on top.
    surge = connections_of(envs[0], 1) if len(ports) == 1 else 0
    assert sum(connections_of(e, len(ports)) for e in envs) + surge <= budget
    # Not needlessly small either: the same host alone would get about a third as much.
    alone = env_of(Deployment(**valid_settings(db_max_connections=max_connections)), ports)
    assert connections_of(alone, len(ports)) > connections_of(envs[0], len(ports))


def test_a_single_host_keeps_its_pools():
    # The figures a single host rendered before groups shared the database, less one
    # connection per instance for its listener (tests/unit/golden/mlflow.env pins the file).
    single = Deployment(**valid_settings())
    assert single.group_size == 1
    env = env_of(single, [5001, 5002])
    assert (
        env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"],
        env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"],
    ) == (
        "9",
        "5",
    )


def test_the_group_size_travels_to_each_host_but_is_no_setting(tmp_path):
    whole = group()
    assert whole.group_size == 3
    one = group_host(whole, HOSTS[1])
    assert one.hosts == () and one.group_size == 3
    settings = {**valid_settings(**SHARED), "group_size": 1}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(SettingsError, match="a known settings file key") as raised:
        deployment_from_file(path)
    assert raised.value.key == "group_size"
    with pytest.raises(SettingsError, match="an integer from 2 to 10"):
        Deployment(**valid_settings(group_size=11))


@pytest.mark.parametrize(
    ("hosts", "changes", "key", "allowed"),
    [
        # 25 connections (db-f1-micro): 15 for the servers, one instance needs 7 (two per
        # engine and its listener), and a lone instance counts twice: no group fits.
        (HOSTS, {"db_max_connections": 25}, "hosts", "no group at all running 1 instance(s)"),
        # 50: 40 for the servers, 5 instance shares, 2 hosts of 2 shares.
        (HOSTS, {"db_max_connections": 50}, "hosts", "at most 2 hosts"),
        # 100: 12 shares, 4 per host of 3.
        (HOSTS, {"server_instances": 5}, "server_instances", "at most 4 with 3 hosts"),
    ],
)
def test_a_group_too_large_for_the_database_is_refused(hosts, changes, key, allowed):
    with pytest.raises(SettingsError) as raised:
        group(hosts, **changes)
    assert raised.value.key == key
    assert raised.value.value == (hosts if key == "hosts" else changes[key])
    assert allowed in str(raised.value)
    assert "db_max_connections" in str(raised.value)


def test_a_host_sized_from_its_cores_takes_only_its_share():
    one = group_host(group(db_max_connections=60), HOSTS[0])
    # 4 cores and memory for 4, but 3 hosts on 60 connections leave 2 per host.
    assert servers.ports_for(one, facts.Resources(4, 8000, 9999)) == [5001, 5002]


def test_pools_too_small_for_the_group_name_it():
    with pytest.raises(ValueError, match="cannot serve 1 instance\\(s\\) on each of 3 hosts"):
        sizing.pool_for(50, 1, True, hosts=3)
