"""How long both clouds' artifact buckets keep what MLflow writes. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass


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
