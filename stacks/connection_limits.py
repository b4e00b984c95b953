"""The database's connection limit, as each cloud derives ``max_connections`` from its size.

Bootstrap sizes the servers' connection pools from it (the ``db_max_connections`` output
and setting). Neither stack sets ``max_connections`` itself, so the limit is the cloud's
default for the tier or instance class. Standard library only.

Cloud SQL for PostgreSQL (Quotas and limits, "Maximum concurrent connections",
https://cloud.google.com/sql/docs/postgres/quotas): by the instance's memory

    =================  ===========
    memory (GiB)       connections
    =================  ===========
    0.6 (db-f1-micro)  25
    1.7 (db-g1-small)  50
    3.75 up to 6       100
    6 up to 7.5        200
    7.5 up to 15       400
    15 up to 30        500
    30 up to 60        600
    60 up to 120       800
    120 and more       1000
    =================  ===========

A ``db-custom-<vCPUs>-<MiB>`` tier names its memory; an Enterprise Plus
``db-perf-optimized-N-<vCPUs>`` tier has 8 GB per vCPU (Machine series overview, "N2
machine types", https://cloud.google.com/sql/docs/postgres/machine-series-overview).

RDS for PostgreSQL (Quotas and constraints, "Maximum number of database connections",
https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/CHAP_Limits.html#RDS_Limits.MaxConnections):
the default parameter group's ``LEAST({DBInstanceClassMemory/9531392}, 5000)``, a formula
that resolves to an integer (Working with DB parameter groups, "DB parameter formulas").
The class's memory comes from the Hardware specifications for DB instance classes
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Concepts.DBInstanceClass.Summary.html).
RDS subtracts what the operating system and its own processes reserve before it applies
the formula, so the live limit is a little lower than the one computed from the class's
memory (reported: db.t2.small, 2 GiB, 198 rather than 225; db.t2.medium, 4 GiB, 413
rather than 450); bootstrap keeps connections free below the limit for that reason among
others.
"""

from __future__ import annotations

import re

_GIB = 1024**3
#: Cloud SQL's table: (memory from, in MiB, connections), largest first.
CLOUD_SQL_BY_MEMORY = (
    (120 * 1024, 1000),
    (60 * 1024, 800),
    (30 * 1024, 600),
    (15 * 1024, 500),
    (7680, 400),
    (6 * 1024, 200),
    (3840, 100),
)
CLOUD_SQL_SHARED_CORE = {"db-f1-micro": 25, "db-g1-small": 50}
#: Enterprise Plus N2 tiers: 8 GB of memory per vCPU.
PERF_OPTIMIZED_MIB_PER_CPU = 8 * 1024
_CUSTOM = re.compile(r"^db-custom-(\d+)-(\d+)$")
_PERF = re.compile(r"^db-perf-optimized-N-(\d+)$")

RDS_BYTES_PER_CONNECTION = 9531392
RDS_MAX_CONNECTIONS = 5000
#: GiB of memory by instance size: burstable classes (db.t3, db.t4g), general purpose
#: (4 GiB per vCPU) and memory optimized (8 GiB per vCPU).
_BURSTABLE = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
_SIZES = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")
_SIZES += ("24xlarge", "32xlarge", "48xlarge")
_VCPUS = (2, 4, 8, 16, 32, 48, 64, 96, 128, 192)
_GENERAL = {size: 4 * cpus for size, cpus in zip(_SIZES, _VCPUS, strict=True)}
_MEMORY = {size: 8 * cpus for size, cpus in zip(_SIZES, _VCPUS, strict=True)}
RDS_MEMORY_GIB = {
    **dict.fromkeys(("t3", "t4g"), _BURSTABLE),
    **dict.fromkeys(("m5", "m5d", "m6g", "m6gd", "m6i", "m6id", "m7g", "m7i", "m8g"), _GENERAL),
    **dict.fromkeys(("r5", "r5d", "r6g", "r6gd", "r6i", "r6id", "r7g", "r7i", "r8g"), _MEMORY),
}


def cloud_sql_memory_mib(tier: str) -> int | None:
    """The memory of a dedicated-core Cloud SQL tier in MiB, or None for another tier."""
    custom = _CUSTOM.match(tier)
    if custom:
        return int(custom.group(2))
    perf = _PERF.match(tier)
    return int(perf.group(1)) * PERF_OPTIMIZED_MIB_PER_CPU if perf else None


def cloud_sql_max_connections(tier: str) -> int:
    """Cloud SQL's default ``max_connections`` for ``tier`` (a tier stacks/gcp accepts)."""
    if tier in CLOUD_SQL_SHARED_CORE:
        return CLOUD_SQL_SHARED_CORE[tier]
    memory = cloud_sql_memory_mib(tier)
    for floor, connections in CLOUD_SQL_BY_MEMORY:
        if memory is not None and memory >= floor:
            return connections
    raise ValueError(f"{tier!r}: no Cloud SQL connection limit for this tier")


def rds_max_connections(instance_class: str) -> int | None:
    """RDS's default ``max_connections`` for ``instance_class`` from the class's memory, or
    None for a class whose memory this module does not know."""
    _, family, size = (instance_class.split(".") + ["", ""])[:3]
    gib = RDS_MEMORY_GIB.get(family, {}).get(size)
    if gib is None:
        return None
    return min(gib * _GIB // RDS_BYTES_PER_CONNECTION, RDS_MAX_CONNECTIONS)
