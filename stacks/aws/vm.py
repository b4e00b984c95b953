"""The Debian 12 VM: IMDSv2 only, encrypted root volume, instance profile, Elastic IP."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import yaml

#: Debian's own AWS account, which publishes the official Debian AMIs.
DEBIAN_OWNER = "136693071363"
DEBIAN_12_AMD64 = "debian-12-amd64-*"
#: The login user of Debian's cloud images.
DEBIAN_DEFAULT_USER = "admin"


@dataclass
class VmArgs:
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]
    instance_type: str
    root_volume_gb: int
    ssh_user: str
    ssh_public_keys: list[str]
    #: Prod: the instance cannot be terminated until this is switched off.
    termination_protection: bool
    tags: dict[str, str]
    #: Session Manager needs its agent, which Debian's images do not ship.
    session_manager: bool = False
    region: str = "us-east-1"


def ssm_agent_commands(region: str) -> list[str]:
    """Install the SSM agent from AWS's regional distribution bucket (not in Debian)."""
    url = (
        f"https://s3.{region}.amazonaws.com/amazon-ssm-{region}"
        "/latest/debian_amd64/amazon-ssm-agent.deb"
    )
    return [
        f"curl -fsSL --retry 5 -o /run/amazon-ssm-agent.deb {url}",
        "dpkg -i /run/amazon-ssm-agent.deb",
        "rm -f /run/amazon-ssm-agent.deb",
        "systemctl enable --now amazon-ssm-agent",
    ]


def cloud_config(
    ssh_user: str, keys: list[str], session_manager: bool = False, region: str = "us-east-1"
) -> str:
    """cloud-init user data: the login user with sudo and every listed key."""
    if ssh_user == DEBIAN_DEFAULT_USER:
        document = {"users": ["default"], "ssh_authorized_keys": keys}
    else:
        document = {
            "users": [
                "default",
                {
                    "name": ssh_user,
                    "groups": ["sudo"],
                    "shell": "/bin/bash",
                    "sudo": "ALL=(ALL) NOPASSWD:ALL",
                    "lock_passwd": True,
                    "ssh_authorized_keys": keys,
                },
            ]
        }
    if session_manager:
        document["runcmd"] = ssm_agent_commands(region)
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


class Vm(pulumi.ComponentResource):
    def __init__(self, name: str, args: VmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:aws:Vm", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def tags(suffix: str) -> dict[str, str]:
            return {**args.tags, "Name": f"{args.tags.get('Name', name)}-{suffix}"}

        image = aws.ec2.get_ami_output(
            most_recent=True,
            owners=[DEBIAN_OWNER],
            filters=[
                {"name": "name", "values": [DEBIAN_12_AMD64]},
                {"name": "architecture", "values": ["x86_64"]},
                {"name": "virtualization-type", "values": ["hvm"]},
            ],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        key = aws.ec2.KeyPair(
            f"{name}-key", public_key=args.ssh_public_keys[0], tags=tags("key"), opts=child
        )
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=image.id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            iam_instance_profile=args.instance_profile,
            key_name=key.key_name,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            root_block_device={
                "encrypted": True,
                "volume_type": "gp3",
                "volume_size": args.root_volume_gb,
                "delete_on_termination": True,
            },
            user_data=cloud_config(
                args.ssh_user, args.ssh_public_keys, args.session_manager, args.region
            ),
            disable_api_termination=args.termination_protection,
            monitoring=False,
            volume_tags=tags("root"),
            tags=tags("instance"),
            # A new image is published every few weeks; replacing the VM is a
            # decision for the operator, not a side effect of the next `pulumi up`.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        self.address = aws.ec2.Eip(f"{name}-ip", domain="vpc", tags=tags("ip"), opts=child)
        aws.ec2.EipAssociation(
            f"{name}-ip-association",
            allocation_id=self.address.allocation_id,
            instance_id=self.instance.id,
            opts=child,
        )
        self.public_ip = self.address.public_ip
        self.register_outputs({"instance_id": self.instance.id, "public_ip": self.public_ip})
