"""How long both clouds' artifact buckets keep what MLflow writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ArtifactRetention:
    versioning: bool
    #: Days after which replaced or deleted object versions are removed.
    noncurrent_days: int
    #: Days after which artifacts themselves expire; 0 keeps them forever.
    expire_days: int
    #: Test stacks: let ``pulumi destroy`` empty the bucket.
    force_destroy: bool


def default_retention(environment: str) -> ArtifactRetention:
    """Per environment class, on both clouds: prod keeps old versions longest, test stacks
    keep none, expire their artifacts after a week and empty the bucket on destroy."""
    test = environment == "test"
    return ArtifactRetention(
        versioning=not test,
        noncurrent_days=90 if environment == "prod" else 30,
        expire_days=7 if test else 0,
        force_destroy=test,
    )


def read_retention(
    reader: Any, environment: str, *, keys: tuple[str, str, str], max_expire_days: int
) -> ArtifactRetention:
    """The retention a stack sets (``reader``: a stacks.config.ConfigReader), the
    environment's defaults for what it leaves out; ``keys`` name its versioning,
    noncurrent-days and expire-days settings, in that order."""
    versioning, noncurrent, expire = keys
    default = default_retention(environment)
    return ArtifactRetention(
        versioning=reader.get_bool(versioning, default.versioning),
        noncurrent_days=reader.get_int(noncurrent, default.noncurrent_days, 1, 3650),
        expire_days=reader.get_int(expire, default.expire_days, 0, max_expire_days),
        force_destroy=default.force_destroy,
    )
