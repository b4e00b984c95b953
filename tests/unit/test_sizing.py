"""Sizing: instances from cores, memory and the database's connection limit; pools within it."""

from __future__ import annotations

import pytest

from provisioning import facts, sizing
from provisioning.settings import Deployment
from provisioning.steps import servers
from provisioning.transport import PreflightError
from tests.unit.test_step_cases import BASE


@pytest.mark.parametrize(
    ("machine", "cores", "memory_mb", "expected"),
    [
        ("e2-small: no room for a second instance beside a build", 2, 1990, 1),
        ("e2-medium / t3.medium", 2, 3900, 2),
        ("one core", 1, 3900, 1),
        ("too little memory still runs one", 2, 900, 1),
        ("e2-standard-4", 4, 16000, 4),
        ("large machine, capped", 32, 64000, 8),
    ],
)
def test_instances_follow_cores_and_memory(machine, cores, memory_mb, expected):
    assert sizing.instances_for(cores, memory_mb) == expected, machine


@pytest.mark.parametrize(
    ("max_connections", "instances", "job_execution", "pool"),
    [
        # (100 - 10) / 2 = 45 per instance, one for its listener, 44 / 3 engines = 14.
        (100, 2, False, sizing.Pool(9, 5)),
        (100, 1, False, sizing.Pool(19, 10)),
        (25, 1, False, sizing.Pool(2, 2)),  # db-f1-micro: 3 x 4 + 1 = 13 of 15
        (50, 2, False, sizing.Pool(4, 2)),  # db-g1-small
        (100, 1, True, sizing.Pool(14, 8)),
    ],
)
def test_every_instance_stays_within_its_share_of_the_database(
    max_connections, instances, job_execution, pool
):
    got = sizing.pool_for(max_connections, instances, job_execution)
    assert got == pool
    engines = sizing.engines(job_execution)
    assert instances * got.per_instance(engines) <= max_connections - sizing.DB_RESERVED_CONNECTIONS
    # MLflow ignores MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=0 (and allows 10), so never 0.
    assert got.max_overflow >= 1


def test_too_few_connections_for_the_instances_is_refused():
    with pytest.raises(ValueError, match="cannot serve 3 instance"):
        sizing.pool_for(25, 3, False)


def deployment(**changes) -> Deployment:
    return Deployment(**{**BASE, **changes})


def test_ports_shrink_to_what_the_database_allows():
    # 4 cores and memory for 4, but 25 connections serve only 2.
    assert servers.ports_for(deployment(db_max_connections=25), facts.Resources(4, 8000, 9999)) == [
        5001,
        5002,
    ]


def test_explicit_instances_beyond_the_database_are_refused_before_anything_changes():
    with pytest.raises(PreflightError, match="db_max_connections 25 cannot serve 3"):
        servers.ports_for(
            deployment(db_max_connections=25, server_instances=3), facts.Resources(4, 8000, 9999)
        )


def test_job_execution_runs_one_instance():
    assert servers.ports_for(deployment(job_execution=True), facts.Resources(8, 32000, 9999)) == [
        5001
    ]
