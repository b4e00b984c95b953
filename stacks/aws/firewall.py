"""Security groups: the VM's ingress plan (stacks/ingress.py), its way out, and Postgres
on the database only from the VM's group."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.tags import named
from stacks.ingress import HTTP, HTTPS, POSTGRES, vm_ingress

#: What stacks deployed before the clouds' components were named alike call this type.
FORMER_TYPE = "mlflow-server:aws:Security"


@dataclass(frozen=True, kw_only=True)
class FirewallArgs:
    vpc_id: pulumi.Input[str]
    https_cidrs: list[str]
    #: Empty when SSH is off (Session Manager): then no rule for port 22 exists at all.
    ssh_cidrs: list[str]
    #: Let's Encrypt's HTTP-01 challenge needs port 80 from anywhere.
    open_http: bool
    tags: dict[str, str]


class Firewall(pulumi.ComponentResource):
    """The VM's and the database's security groups, every rule a resource of its own."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        renamed = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=FORMER_TYPE)])
        super().__init__(
            "mlflow-server:aws:Firewall", name, None, pulumi.ResourceOptions.merge(opts, renamed)
        )
        child = pulumi.ResourceOptions(parent=self)

        # Rules are separate aws.vpc.SecurityGroup*Rule resources (the provider's
        # recommended form: one CIDR per rule, own tags and IDs), never inline ones.
        self.vm = aws.ec2.SecurityGroup(
            f"{name}-vm",
            vpc_id=args.vpc_id,
            description="MLflow VM: HTTPS from allowed CIDRs",
            tags=named(args.tags, name, "vm"),
            opts=child,
        )
        self.database = aws.ec2.SecurityGroup(
            f"{name}-db",
            vpc_id=args.vpc_id,
            description="MLflow database: Postgres from the VM only",
            tags=named(args.tags, name, "db"),
            opts=child,
        )

        def rule(kind, suffix: str, group, port: int, description: str, **source) -> None:
            kind(
                f"{name}-{suffix}",
                security_group_id=group.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description=description,
                tags=named(args.tags, name, suffix),
                opts=child,
                **source,
            )

        ingress = aws.vpc.SecurityGroupIngressRule
        plan = vm_ingress(
            https_cidrs=args.https_cidrs, ssh_cidrs=args.ssh_cidrs, open_http=args.open_http
        )
        for entry in plan:
            for index, cidr in enumerate(entry.sources):
                # IPv4 only: stacks/config.py refuses IPv6 sources (the VPC has none).
                suffix, text = f"vm-{entry.purpose}-{index}", f"{entry.purpose} from {cidr}"
                rule(ingress, suffix, self.vm, entry.port, text, cidr_ipv4=cidr)

        # The VM reaches package mirrors, S3 and the SSM endpoints over HTTP(S),
        # and the database on its own security group.
        egress = aws.vpc.SecurityGroupEgressRule
        for label, port in (("https", HTTPS), ("http", HTTP)):
            text = f"{label} to the internet"
            rule(egress, f"vm-out-{label}", self.vm, port, text, cidr_ipv4="0.0.0.0/0")
        to_db, from_vm = "Postgres to the database", "Postgres from the MLflow VM"
        rule(egress, "vm-out-postgres", self.vm, POSTGRES, to_db, **self._peer(self.database))
        rule(ingress, "db-from-vm", self.database, POSTGRES, from_vm, **self._peer(self.vm))

        self.register_outputs({"vm_group_id": self.vm.id, "database_group_id": self.database.id})

    @staticmethod
    def _peer(group: aws.ec2.SecurityGroup) -> dict[str, pulumi.Output]:
        """A rule's source or destination: another security group rather than a CIDR."""
        return {"referenced_security_group_id": group.id}
