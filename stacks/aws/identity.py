"""The VM's IAM role and instance profile: its artifact prefix and nothing more."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.policies import SSM_CORE_POLICY, artifact_access_policy, ec2_trust_policy
from stacks.aws.settings import AwsSettings
from stacks.component import Component


@dataclass(frozen=True, kw_only=True)
class IdentityArgs:
    settings: AwsSettings
    #: The artifact bucket's name: the role may use its artifact prefix only.
    bucket: pulumi.Input[str]


#: The role and its instance profile carry the VM's Name tag: they are its identity.
TAGGED_AS = "vm"


class Identity(Component):
    """The VM's role and instance profile: objects under the artifact prefix, and Session
    Manager's core policy when SSH goes through it; nothing else."""

    TYPE = "mlflow-server:aws:Identity"

    def declare(self, name: str, args: IdentityArgs) -> dict[str, pulumi.Input]:
        s = args.settings

        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(ec2_trust_policy()),
            description="MLflow VM: its artifact prefix only",
            tags=s.tags(TAGGED_AS),
            opts=self.child,
        )
        aws.iam.RolePolicy(
            f"{name}-artifacts",
            role=self.role.id,
            policy=pulumi.Output.from_input(args.bucket).apply(
                lambda bucket: json.dumps(
                    artifact_access_policy(bucket, s.artifacts_prefix, s.partition)
                )
            ),
            opts=self.child,
        )
        if s.session_manager:
            aws.iam.RolePolicyAttachment(
                f"{name}-ssm",
                role=self.role.name,
                policy_arn=f"arn:{s.partition}:iam::aws:{SSM_CORE_POLICY}",
                opts=self.child,
            )
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-profile", role=self.role.name, tags=s.tags(TAGGED_AS), opts=self.child
        )
        return {"role_arn": self.role.arn, "instance_profile": self.instance_profile.name}
