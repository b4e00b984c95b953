"""The artifact bucket: private, uniformly controlled, versioned per environment."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.contract import ARTIFACTS_PREFIX
from stacks.gcp.settings import GcpSettings
from stacks.retention import ArtifactRetention


@dataclass(frozen=True, kw_only=True)
class ArtifactBucketArgs:
    settings: GcpSettings


def _rule(action: str, **condition) -> gcp.storage.BucketLifecycleRuleArgs:
    return gcp.storage.BucketLifecycleRuleArgs(
        action=gcp.storage.BucketLifecycleRuleActionArgs(type=action),
        condition=gcp.storage.BucketLifecycleRuleConditionArgs(**condition),
    )


def lifecycle_rules(retention: ArtifactRetention) -> list[gcp.storage.BucketLifecycleRuleArgs]:
    """Noncurrent versions age out; optional expiry of live objects; no stale uploads."""
    rules = [_rule("AbortIncompleteMultipartUpload", age=7)]
    if retention.versioning:
        noncurrent = retention.noncurrent_days
        rules.append(_rule("Delete", days_since_noncurrent_time=noncurrent, with_state="ARCHIVED"))
    if retention.expire_days:
        rules.append(_rule("Delete", age=retention.expire_days, with_state="ANY"))
    return rules


class ArtifactBucket(Component):
    """A bucket no ACL or public grant can open; only IAM on the bucket grants access."""

    TYPE = "mlflow-server:gcp:ArtifactBucket"

    def declare(self, name: str, args: ArtifactBucketArgs) -> dict[str, pulumi.Input]:
        s = args.settings

        self.bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            location=s.bucket_location,
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=s.artifacts.versioning),
            lifecycle_rules=lifecycle_rules(s.artifacts),
            force_destroy=s.artifacts.force_destroy,
            # A disposable bucket keeps no soft-deleted copies behind after destroy.
            soft_delete_policy=(
                gcp.storage.BucketSoftDeletePolicyArgs(retention_duration_seconds=0)
                if s.artifacts.force_destroy
                else None
            ),
            labels=s.labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = self.bucket.name
        self.artifacts_destination = self.bucket.name.apply(
            lambda n: f"gs://{n}/{ARTIFACTS_PREFIX}"
        )
        return {"name": self.name, "artifacts_destination": self.artifacts_destination}
