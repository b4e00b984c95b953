"""Security groups: the VM's ingress plan (stacks/ingress.py), its way out, and Postgres
on the database only from the VM's group."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.settings import AwsSettings
from stacks.aws.tags import named
from stacks.component import Component
from stacks.ingress import HTTP, HTTPS, POSTGRES, vm_ingress


@dataclass(frozen=True, kw_only=True)
class FirewallArgs:
    settings: AwsSettings
    vpc_id: pulumi.Input[str]


class Firewall(Component):
    """The VM's and the database's security groups, every rule a resource of its own."""

    TYPE = "mlflow-server:aws:Firewall"
    #: What stacks deployed before the clouds' components were named alike call this type.
    FORMER = "mlflow-server:aws:Security"

    def declare(self, name: str, args: FirewallArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        own_tags = s.tags(name)

        # Rules are separate aws.vpc.SecurityGroup*Rule resources (the provider's
        # recommended form: one CIDR per rule, own tags and IDs), never inline ones.
        def group(suffix: str, description: str) -> aws.ec2.SecurityGroup:
            return aws.ec2.SecurityGroup(
                f"{name}-{suffix}",
                vpc_id=args.vpc_id,
                description=description,
                tags=named(own_tags, name, suffix),
                opts=self.child,
            )

        if s.common.is_group:
            self.vm = group("vm", "MLflow servers: HTTPS from the load balancer only")
            self.lb = group("lb", "MLflow load balancer: HTTPS from allowed CIDRs")
        else:
            self.vm = group("vm", "MLflow VM: HTTPS from allowed CIDRs")
        self.database = group("db", "MLflow database: Postgres from the VM only")

        def rule(kind, suffix: str, target, port: int, description: str, **source) -> None:
            kind(
                f"{name}-{suffix}",
                security_group_id=target.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description=description,
                tags=named(own_tags, name, suffix),
                opts=self.child,
                **source,
            )

        ingress = aws.vpc.SecurityGroupIngressRule
        if s.common.is_group:
            self._group_ingress(rule, s)
            plan = []
        else:
            # No SSH rule at all with Session Manager.
            plan = vm_ingress(
                https_cidrs=s.common.https_allowed_cidrs,
                ssh_cidrs=[] if s.session_manager else s.common.ssh_allowed_cidrs,
                tls_mode=s.common.tls_mode,
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

        outputs = {"vm_group_id": self.vm.id, "database_group_id": self.database.id}
        if s.common.is_group:
            outputs["lb_group_id"] = self.lb.id
        return outputs

    def _group_ingress(self, rule, s: AwsSettings) -> None:
        """A group: the load balancer admits HTTPS from the allowed CIDRs and sends it on
        to the servers' group only; the servers admit HTTPS from the load balancer only
        and no SSH (Session Manager needs no open port)."""
        ingress, egress = aws.vpc.SecurityGroupIngressRule, aws.vpc.SecurityGroupEgressRule
        for index, cidr in enumerate(s.common.https_allowed_cidrs):
            rule(ingress, f"lb-https-{index}", self.lb, HTTPS, f"https from {cidr}", cidr_ipv4=cidr)
        text = "HTTPS to the MLflow servers"
        rule(egress, "lb-out-https", self.lb, HTTPS, text, **self._peer(self.vm))
        text = "HTTPS from the load balancer"
        rule(ingress, "vm-https-lb", self.vm, HTTPS, text, **self._peer(self.lb))

    @staticmethod
    def _peer(group: aws.ec2.SecurityGroup) -> dict[str, pulumi.Output]:
        """A rule's source or destination: another security group rather than a CIDR."""
        return {"referenced_security_group_id": group.id}
