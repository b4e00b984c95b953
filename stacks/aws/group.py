"""A group of servers: identical Debian 12 instances from one launch template (IMDSv2
only, encrypted root volume, the instance profile, no public address), kept running by
an Auto Scaling group across two zones' private subnets."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.server import cloud_config, debian_12_image
from stacks.aws.settings import AwsSettings
from stacks.aws.tags import named
from stacks.component import Component
from stacks.host_key import host_key
from stacks.passwords import AWS_ADMIN_PASSWORD, admin_password, random_password, shared_secret

#: Debian's AMIs boot from this device.
ROOT_DEVICE = "/dev/xvda"
#: Seconds after an instance starts before its health counts (EC2 status checks).
GRACE_SECONDS = 300


@dataclass(frozen=True, kw_only=True)
class ServerGroupArgs:
    settings: AwsSettings
    #: Private subnets in two zones, their way out a NAT gateway.
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]
    #: The load balancer's target group the instances register with.
    target_group_arn: pulumi.Input[str]


def group_tags(tags: dict[str, str]) -> list[aws.autoscaling.GroupTagArgs]:
    """An Auto Scaling group's tags, each given on to the instances it launches (the
    provider's default tags reach neither the group nor its instances)."""
    return [
        aws.autoscaling.GroupTagArgs(key=key, value=value, propagate_at_launch=True)
        for key, value in sorted(tags.items())
    ]


class ServerGroup(Component):
    """The launch template (what a single VM is, less its address), the Auto Scaling
    group that keeps ``groupSize`` instances of it registered with the load balancer,
    and the secrets every instance shares."""

    TYPE = "mlflow-server:aws:ServerGroup"

    def declare(self, name: str, args: ServerGroupArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        group = s.common.group
        keys = s.common.ssh_public_keys

        def tags(suffix: str) -> dict[str, str]:
            return named(s.tags(name), name, suffix)

        image = debian_12_image(self)
        key = aws.ec2.KeyPair(f"{name}-key", public_key=keys[0], tags=tags("key"), opts=self.child)
        # One host key for every instance: bootstrap pins the same key on each.
        self.host_key = host_key(f"{name}-host-key", self.child)
        # Launch templates take user data base64-encoded; secret, as the host key is in it.
        user_data = pulumi.Output.all(
            self.host_key.private_openssh, self.host_key.public_openssh
        ).apply(
            lambda pair: base64.b64encode(
                cloud_config(
                    s.common.ssh_user,
                    keys,
                    session_manager=True,
                    region=s.region,
                    host_private_key=pair[0],
                    host_public_key=pair[1],
                ).encode()
            ).decode()
        )
        self.template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            image_id=image.id,
            instance_type=s.instance_type,
            iam_instance_profile={"name": args.instance_profile},
            key_name=key.key_name,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            network_interfaces=[
                {
                    "device_index": 0,
                    "associate_public_ip_address": "false",
                    "security_groups": [args.security_group_id],
                    "delete_on_termination": "true",
                }
            ],
            block_device_mappings=[
                {
                    "device_name": ROOT_DEVICE,
                    "ebs": {
                        "encrypted": "true",
                        "volume_type": "gp3",
                        "volume_size": s.root_volume_gb,
                        "delete_on_termination": "true",
                    },
                }
            ],
            user_data=user_data,
            # What the group launches carries the stack's tags, so teardown finds it.
            tag_specifications=[
                {"resource_type": "instance", "tags": tags("instance")},
                {"resource_type": "volume", "tags": tags("root")},
                {"resource_type": "network-interface", "tags": tags("nic")},
            ],
            update_default_version=True,
            tags=tags("template"),
            opts=self.child,
        )
        self.group = aws.autoscaling.Group(
            f"{name}-asg",
            vpc_zone_identifiers=args.subnet_ids,
            min_size=group.size,
            max_size=group.size,
            desired_capacity=group.size,
            launch_template={"id": self.template.id, "version": "$Default"},
            target_group_arns=[args.target_group_arn],
            # EC2 status checks, not the load balancer's: the instances are configured by
            # `fab bootstrap` after they start, and until then /health fails; with ELB
            # health checks the group would replace them, again and again. The load
            # balancer sends requests only to healthy instances either way. No instance
            # refresh, for the same reason: a new template reaches new instances only.
            health_check_type="EC2",
            health_check_grace_period=GRACE_SECONDS,
            tags=group_tags(tags("instance")),
            opts=self.child,
        )

        password = random_password(f"{name}-admin-password", AWS_ADMIN_PASSWORD, self.child)
        self.admin_password = admin_password(s.common.admin_password, password.result)
        self.flask_secret_key = shared_secret(f"{name}-flask-key", self.child)
        self.kek_passphrase = shared_secret(f"{name}-kek", self.child)
        self.ssh_host_key = self.host_key.public_openssh
        #: The group as Session Manager's callers find it: its name and region.
        self.vm_id = self.group.name
        self.vm_zone = pulumi.Output.from_input(s.region)
        self.hosts = self.group.name.apply(
            lambda group_name: [
                {"group": group_name, "region": s.region, "size": group.size, "instances": []}
            ]
        )
        return {
            "group": self.vm_id,
            "admin_password": self.admin_password,
            "ssh_host_key": self.ssh_host_key,
        }
