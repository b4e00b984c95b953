"""The server: a Debian 12 VM (IMDSv2 only, encrypted root volume, instance profile,
Elastic IP) with the SSH host key the stack generated, and the MLflow admin password it
is bootstrapped with."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import yaml

from stacks.aws.settings import AwsSettings
from stacks.aws.tags import named
from stacks.component import Component
from stacks.host_key import host_key
from stacks.passwords import AWS_ADMIN_PASSWORD, admin_password, random_password

#: Debian's own AWS account, which publishes the official Debian AMIs.
DEBIAN_OWNER = "136693071363"
DEBIAN_12_AMD64 = "debian-12-amd64-*"
#: The login user of Debian's cloud images.
DEBIAN_DEFAULT_USER = "admin"


#: How long the SSM agent's install waits for dpkg's lock: on a first boot
#: unattended-upgrades may hold it for minutes, and ``dpkg -i`` would fail at once.
DPKG_LOCK_TIMEOUT_SECONDS = 600


def ssm_agent_commands(region: str) -> list[str]:
    """Install the SSM agent from AWS's regional distribution bucket (not in Debian)."""
    url = (
        f"https://s3.{region}.amazonaws.com/amazon-ssm-{region}"
        "/latest/debian_amd64/amazon-ssm-agent.deb"
    )
    return [
        f"curl -fsSL --retry 5 -o /run/amazon-ssm-agent.deb {url}",
        f"apt-get -o DPkg::Lock::Timeout={DPKG_LOCK_TIMEOUT_SECONDS} install -y"
        " /run/amazon-ssm-agent.deb",
        "rm -f /run/amazon-ssm-agent.deb",
        "systemctl enable --now amazon-ssm-agent",
    ]


def host_key_config(private_openssh: str, public_openssh: str) -> dict:
    """cloud-init's ``ssh_keys``: the stack's ED25519 host key and no other.

    cloud-init's SSH module runs before sshd starts (cloud-init.service is ordered
    before it); it deletes the image's host keys (``ssh_deletekeys``), writes the ones
    given in ``ssh_keys`` and then generates none (canonical/cloud-init
    ``cloudinit/config/cc_ssh.py``: ``ssh_genkeytypes`` applies only without
    ``ssh_keys``; set empty here all the same). So sshd serves this key from its start.
    """
    return {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": private_openssh, "ed25519_public": public_openssh},
    }


def cloud_config(
    ssh_user: str,
    keys: list[str],
    *,
    session_manager: bool,
    region: str,
    host_private_key: str,
    host_public_key: str,
) -> str:
    """cloud-init user data: the login user with sudo and every listed key, the stack's
    SSH host key, and the SSM agent for Session Manager."""
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
    document.update(host_key_config(host_private_key, host_public_key))
    if session_manager:
        document["runcmd"] = ssm_agent_commands(region)
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def debian_12_image(parent: pulumi.Resource):
    """The newest Debian 12 amd64 AMI Debian publishes (its ``id``)."""
    return aws.ec2.get_ami_output(
        most_recent=True,
        owners=[DEBIAN_OWNER],
        filters=[
            {"name": "name", "values": [DEBIAN_12_AMD64]},
            {"name": "architecture", "values": ["x86_64"]},
            {"name": "virtualization-type", "values": ["hvm"]},
        ],
        opts=pulumi.InvokeOutputOptions(parent=parent),
    )


@dataclass(frozen=True, kw_only=True)
class ServerArgs:
    settings: AwsSettings
    #: A public subnet.
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]


class Server(Component):
    """The VM MLflow runs on, its SSH host key, and the MLflow admin password it is
    bootstrapped with."""

    TYPE = "mlflow-server:aws:Server"
    #: What stacks deployed before the clouds' components were named alike call this type,
    #: and the admin password, which they declared at the top level.
    FORMER = "mlflow-server:aws:Vm"
    FORMER_ADMIN_PASSWORD = "admin-password"  # noqa: S105 - a resource name

    def declare(self, name: str, args: ServerArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        keys = s.common.ssh_public_keys

        def tags(suffix: str) -> dict[str, str]:
            return named(s.tags(name), name, suffix)

        image = debian_12_image(self)
        key = aws.ec2.KeyPair(f"{name}-key", public_key=keys[0], tags=tags("key"), opts=self.child)
        self.host_key = host_key(f"{name}-host-key", self.child)
        # Secret, as the private host key is in it (pulumi.Output.all keeps that mark).
        user_data = pulumi.Output.all(
            self.host_key.private_openssh, self.host_key.public_openssh
        ).apply(
            lambda pair: cloud_config(
                s.common.ssh_user,
                keys,
                session_manager=s.session_manager,
                region=s.region,
                host_private_key=pair[0],
                host_public_key=pair[1],
            )
        )
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=image.id,
            instance_type=s.instance_type,
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
                "volume_size": s.root_volume_gb,
                "delete_on_termination": True,
            },
            # The login user, the stack's host key, and for Session Manager its agent,
            # which Debian's images do not ship. A changed user data stops and starts the
            # instance (user_data_replace_on_change is not set), and cloud-init applies
            # it only on an instance's first boot.
            user_data=user_data,
            # Prod: the instance cannot be terminated until this is switched off.
            disable_api_termination=s.deletion_protection,
            monitoring=False,
            volume_tags=tags("root"),
            tags=tags("instance"),
            # A new image is published every few weeks; replacing the VM is a
            # decision for the operator, not a side effect of the next `pulumi up`.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        self.address = aws.ec2.Eip(f"{name}-ip", domain="vpc", tags=tags("ip"), opts=self.child)
        aws.ec2.EipAssociation(
            f"{name}-ip-association",
            allocation_id=self.address.allocation_id,
            instance_id=self.instance.id,
            opts=self.child,
        )
        password = random_password(
            f"{name}-admin-password",
            AWS_ADMIN_PASSWORD,
            pulumi.ResourceOptions(
                parent=self,
                aliases=[
                    pulumi.Alias(name=self.FORMER_ADMIN_PASSWORD, parent=pulumi.ROOT_STACK_RESOURCE)
                ],
            ),
        )
        self.admin_password = admin_password(s.common.admin_password, password.result)
        self.public_ip = self.address.public_ip
        self.ssh_host_key = self.host_key.public_openssh
        #: The instance ID, which Session Manager takes, and its availability zone.
        self.vm_id = self.instance.id
        self.vm_zone = self.instance.availability_zone
        return {
            "public_ip": self.public_ip,
            "instance_id": self.vm_id,
            "admin_password": self.admin_password,
            "ssh_host_key": self.ssh_host_key,
        }
