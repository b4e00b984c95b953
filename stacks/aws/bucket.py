"""S3 bucket for artifacts: private, owner-enforced, encrypted, TLS-only, versioned."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.policies import tls_only_bucket_policy
from stacks.aws.settings import AwsSettings
from stacks.component import Component


@dataclass(frozen=True, kw_only=True)
class ArtifactBucketArgs:
    settings: AwsSettings


class ArtifactBucket(Component):
    """A private bucket: public access blocked, owner-enforced, encrypted, TLS-only, with
    versioning and a lifecycle that follow the artifact s.artifacts."""

    TYPE = "mlflow-server:aws:ArtifactBucket"

    def declare(self, name: str, args: ArtifactBucketArgs) -> dict[str, pulumi.Input]:
        s = args.settings

        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            force_destroy=s.artifacts.force_destroy,
            tags=s.tags(name),
            opts=self.child,
        )
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self.child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=self.bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=self.child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                    "bucket_key_enabled": True,
                }
            ],
            opts=self.child,
        )
        # The policy is a Deny only, but S3 refuses policy changes while the public
        # access block is being created, so it waits for the block.
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=self.bucket.id,
            policy=self.bucket.bucket.apply(
                lambda bucket: json.dumps(tls_only_bucket_policy(bucket, s.partition))
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]),
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=self.bucket.id,
            versioning_configuration={
                "status": "Enabled" if s.artifacts.versioning else "Suspended"
            },
            opts=self.child,
        )
        rules = [
            {
                "id": "abort-incomplete-uploads",
                "status": "Enabled",
                "filter": {},
                "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
            },
            {
                "id": "expire-noncurrent-versions",
                "status": "Enabled" if s.artifacts.versioning else "Disabled",
                "filter": {},
                "noncurrent_version_expiration": {"noncurrent_days": s.artifacts.noncurrent_days},
            },
        ]
        if s.artifacts.expire_days:
            rules.append(
                {
                    "id": "expire-artifacts",
                    "status": "Enabled",
                    "filter": {},
                    "expiration": {"days": s.artifacts.expire_days},
                }
            )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=self.bucket.id,
            rules=rules,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        self.name = self.bucket.bucket
        return {"bucket": self.bucket.bucket, "arn": self.bucket.arn}
