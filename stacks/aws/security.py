"""Security groups: HTTPS (and SSH by setting) to the VM, Postgres only from the VM."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.config import ACME_HTTP_SOURCES

HTTPS, HTTP, SSH, POSTGRES = 443, 80, 22, 5432


@dataclass
class SecurityArgs:
    vpc_id: pulumi.Input[str]
    https_cidrs: list[str]
    #: Empty when SSH is off (Session Manager): then no rule for port 22 exists at all.
    ssh_cidrs: list[str]
    #: Let's Encrypt's HTTP-01 challenge needs port 80 from anywhere (ACME_HTTP_SOURCES).
    open_http: bool
    tags: dict[str, str]


class Security(pulumi.ComponentResource):
    def __init__(self, name: str, args: SecurityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:aws:Security", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def tags(suffix: str) -> dict[str, str]:
            return {**args.tags, "Name": f"{args.tags.get('Name', name)}-{suffix}"}

        # Rules are separate aws.vpc.SecurityGroup*Rule resources (the provider's
        # recommended form: one CIDR per rule, own tags and IDs), never inline ones.
        self.vm = aws.ec2.SecurityGroup(
            f"{name}-vm",
            vpc_id=args.vpc_id,
            description="MLflow VM: HTTPS from allowed CIDRs",
            tags=tags("vm"),
            opts=child,
        )
        self.database = aws.ec2.SecurityGroup(
            f"{name}-db",
            vpc_id=args.vpc_id,
            description="MLflow database: Postgres from the VM only",
            tags=tags("db"),
            opts=child,
        )

        ports = [("https", HTTPS, args.https_cidrs)]
        if args.open_http:
            ports.append(("http", HTTP, ACME_HTTP_SOURCES))
        ports.append(("ssh", SSH, args.ssh_cidrs))
        for label, port, cidrs in ports:
            for index, cidr in enumerate(cidrs):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-vm-{label}-{index}",
                    security_group_id=self.vm.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"{label} from {cidr}",
                    tags=tags(f"vm-{label}-{index}"),
                    # IPv4 only: stacks/config.py refuses IPv6 sources (the VPC has none).
                    cidr_ipv4=cidr,
                    opts=child,
                )

        # The VM reaches package mirrors, S3 and the SSM endpoints over HTTP(S),
        # and the database on its own security group.
        for label, port in (("https", HTTPS), ("http", HTTP)):
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-vm-out-{label}",
                security_group_id=self.vm.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4="0.0.0.0/0",
                description=f"{label} to the internet",
                tags=tags(f"vm-out-{label}"),
                opts=child,
            )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-vm-out-postgres",
            security_group_id=self.vm.id,
            ip_protocol="tcp",
            from_port=POSTGRES,
            to_port=POSTGRES,
            referenced_security_group_id=self.database.id,
            description="Postgres to the database",
            tags=tags("vm-out-postgres"),
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-db-from-vm",
            security_group_id=self.database.id,
            ip_protocol="tcp",
            from_port=POSTGRES,
            to_port=POSTGRES,
            referenced_security_group_id=self.vm.id,
            description="Postgres from the MLflow VM",
            tags=tags("db-from-vm"),
            opts=child,
        )

        self.register_outputs({"vm_group_id": self.vm.id, "database_group_id": self.database.id})
