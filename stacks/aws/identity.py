"""The VM's IAM role and instance profile: its artifact prefix and nothing more."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.policies import SSM_CORE_POLICY, artifact_access_policy, ec2_trust_policy


@dataclass(frozen=True, kw_only=True)
class IdentityArgs:
    bucket: pulumi.Input[str]
    prefix: str
    partition: str
    session_manager: bool
    tags: dict[str, str]


class Identity(pulumi.ComponentResource):
    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:aws:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(ec2_trust_policy()),
            description="MLflow VM: its artifact prefix only",
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-artifacts",
            role=self.role.id,
            policy=pulumi.Output.from_input(args.bucket).apply(
                lambda bucket: json.dumps(
                    artifact_access_policy(bucket, args.prefix, args.partition)
                )
            ),
            opts=child,
        )
        if args.session_manager:
            aws.iam.RolePolicyAttachment(
                f"{name}-ssm",
                role=self.role.name,
                policy_arn=f"arn:{args.partition}:iam::aws:{SSM_CORE_POLICY}",
                opts=child,
            )
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-profile", role=self.role.name, tags=args.tags, opts=child
        )
        self.register_outputs(
            {"role_arn": self.role.arn, "instance_profile": self.instance_profile.name}
        )
