"""How many server instances a host runs, how much memory each may use, and how many
database connections each may open. Pure functions of measured figures.

Measured on deployed servers (MLflow 3.17): one idle instance is about 550 MB RSS
(the ``mlflow server`` parent about 260 MB plus its uvicorn worker about 290 MB).
The VM keeps room for everything else at the worst moment of a bootstrap: the OS
and nginx, a conda build and a schema migration beside the running servers.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What one instance is counted as when sizing (measured idle RSS plus headroom).
INSTANCE_MB = 650
#: Memory kept for the OS, nginx, a conda build and a migration.
RESERVED_MB = 1024
#: mlflow-metrics, which runs beside the servers (measured about 78 MB RSS).
METRICS_MB = 100
#: Per instance: above HIGH the kernel reclaims hard; at MAX the instance is killed
#: and systemd starts it again.
INSTANCE_MEMORY_HIGH_MB = 900
INSTANCE_MEMORY_MAX_MB = 1200
MAX_INSTANCES = 8
#: PostgreSQL's own default, for databases whose limit the settings do not give.
DEFAULT_DB_MAX_CONNECTIONS = 100
#: Connections left for superusers (PostgreSQL keeps 3), migrations, backups and operators.
DB_RESERVED_CONNECTIONS = 10
#: SQLAlchemy engines per instance: tracking, model registry and basic auth each
#: open their own; MLflow's job store adds one where jobs run.
ENGINES = 3
#: Per instance beside its pools: the connection that listens for user changes
#: (kit_auth; counted for every instance, whether its app listens or not).
LISTENER_CONNECTIONS = 1


def instances_for(cores: int, memory_mb: int) -> int:
    """One single-worker server per core, as memory allows, 1 to 8.

    Separate single-worker processes behind nginx keep each upstream connection
    on its own socket: uvicorn with ``--workers`` above 1 shares one listening
    socket and adds about 40 ms per request on reused connections (DESIGN.md).
    """
    by_memory = max(1, (memory_mb - RESERVED_MB) // INSTANCE_MB)
    return max(1, min(cores, by_memory, MAX_INSTANCES))


@dataclass(frozen=True)
class Pool:
    """MLFLOW_SQLALCHEMYSTORE_POOL_SIZE and _MAX_OVERFLOW for every engine of one instance."""

    size: int
    max_overflow: int

    @property
    def wsgi_threads(self) -> int:
        """Requests one instance runs at once (templates/kit_server_site.py): half its pool,
        as MLflow's log_batch holds two connections of it at once, so no set of requests
        can hold the whole pool while each waits for another connection."""
        return max(1, (self.size + self.max_overflow) // 2)

    def per_instance(self, engines: int) -> int:
        """Connections one instance may open at most: its engines' pools and its listener."""
        return engines * (self.size + self.max_overflow) + LISTENER_CONNECTIONS


def engines(job_execution: bool) -> int:
    return ENGINES + (1 if job_execution else 0)


def least_per_instance(job_execution: bool) -> int:
    """The fewest connections an instance runs with: two per engine (MLflow needs an
    overflow of at least 1) and its listener."""
    return 2 * engines(job_execution) + LISTENER_CONNECTIONS


def sizing_slots(instances: int, hosts: int = 1) -> int:
    """How many instances' shares of the database one host of ``hosts`` sizes its pools by.

    A single host divides the database among its own instances. A host of a group counts
    every host of the group as holding as many, and adds the surge instance that serves
    beside a lone instance while it restarts (provisioning.steps.servers.roll): each host
    then stays within 1/hosts of the database at every moment, its own restart included,
    so the group's sum fits whichever host rolls and however the hosts' instance counts
    differ. A host restarts an instance by stopping it first, so a restart with more than
    one instance opens no more connections than it closed.
    """
    if hosts == 1:
        return instances
    return hosts * (instances + (1 if instances == 1 else 0))


def instances_within(max_connections: int, job_execution: bool, hosts: int = 1) -> int:
    """The most instances per host whose pools fit the database's connection limit,
    ``hosts`` hosts sharing it (0 if none)."""
    slots = max(0, (max_connections - DB_RESERVED_CONNECTIONS) // least_per_instance(job_execution))
    if hosts == 1:
        return slots
    per_host = slots // hosts
    # One instance counts twice (its surge instance): a host needs 2 slots either way.
    return per_host if per_host >= 2 else 0


def pool_for(max_connections: int, instances: int, job_execution: bool, hosts: int = 1) -> Pool:
    """Each instance's engines and its listener together stay within its share of the
    database's limit: the host's own instances, and in a group of ``hosts`` every other
    host's too (sizing_slots).

    MLflow ignores a max overflow of 0 (and then allows SQLAlchemy's 10), so the
    overflow is at least 1 and each engine needs at least 2 connections.
    """
    count = engines(job_execution)
    slots = sizing_slots(instances, hosts)
    share = (max_connections - DB_RESERVED_CONNECTIONS) // slots
    per_engine = (share - LISTENER_CONNECTIONS) // count
    if per_engine < 2:
        group = f" on each of {hosts} hosts" if hosts > 1 else ""
        raise ValueError(
            f"{max_connections} database connections cannot serve {instances} instance(s)"
            f"{group}: each needs {least_per_instance(job_execution)}, plus "
            f"{DB_RESERVED_CONNECTIONS} kept free"
        )
    size = max(1, per_engine * 2 // 3)
    return Pool(size, per_engine - size)


# --------------------------------------------------------------------------- model endpoints


def model_room_mb(memory_mb: int, server_instances: int) -> int:
    """Memory left for model endpoints: the tracking servers and mlflow-metrics come first,
    and the VM keeps its reserve (the OS, nginx, a conda build, a migration)."""
    return memory_mb - RESERVED_MB - METRICS_MB - server_instances * INSTANCE_MB


def models_need_mb(endpoints: list[tuple[int, int]]) -> int:
    """What endpoints of (workers, memory per worker) need: each worker's memory in full
    (its MemoryMax), plus the largest endpoint once more, because a version switch runs
    the new instances beside the old ones until nginx has moved to them."""
    sizes = [workers * memory for workers, memory in endpoints]
    return sum(sizes) + max(sizes, default=0)
