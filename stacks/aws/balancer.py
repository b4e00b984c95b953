"""The Application Load Balancer in front of a group: HTTPS only, in the public subnets,
with a certificate ACM validates by DNS for the domain (or the stack's own, imported)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.settings import AwsSettings
from stacks.aws.tags import named
from stacks.component import Component
from stacks.ingress import ALB_IDLE_TIMEOUT_SECONDS, DRAINING_SECONDS, HEALTH_CHECK_PATH, HTTPS

#: TLS 1.3 and 1.2 with forward secrecy only (Elastic Load Balancing, "Security policies
#: for your Application Load Balancer").
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True, kw_only=True)
class LoadBalancerArgs:
    settings: AwsSettings
    vpc_id: pulumi.Input[str]
    #: Public subnets in two zones.
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]


def split_chain(pem: str) -> tuple[str, str | None]:
    """ACM imports the leaf certificate and its chain apart: (leaf, intermediates or None)."""
    blocks = _PEM_BLOCK.findall(pem)
    chain = "\n".join(blocks[1:])
    return blocks[0] + "\n", (chain + "\n" if chain else None)


class LoadBalancer(Component):
    """Certificate, load balancer, target group (HTTPS to the servers, /health, a short
    deregistration delay) and the HTTPS listener. No port 80."""

    TYPE = "mlflow-server:aws:LoadBalancer"

    def declare(self, name: str, args: LoadBalancerArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        group = s.common.group

        def tags(suffix: str) -> dict[str, str]:
            return named(s.tags(name), name, suffix)

        if group.provided_certificate:
            leaf, chain = split_chain(group.certificate_pem)
            certificate_arn = aws.acm.Certificate(
                f"{name}-certificate",
                certificate_body=leaf,
                certificate_chain=chain,
                private_key=group.certificate_key,
                tags=tags("certificate"),
                opts=self.child,
            ).arn
        else:
            certificate = aws.acm.Certificate(
                f"{name}-certificate",
                domain_name=s.common.domain,
                validation_method="DNS",
                tags=tags("certificate"),
                opts=self.child,
            )
            # The listener takes only an issued certificate: wait until ACM has seen the
            # CNAME it asks for (README: "topology: group").
            certificate_arn = aws.acm.CertificateValidation(
                f"{name}-certificate-validation",
                certificate_arn=certificate.arn,
                opts=self.child,
            ).certificate_arn

        self.balancer = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            security_groups=[args.security_group_id],
            subnets=args.subnet_ids,
            drop_invalid_header_fields=True,
            # Set, not left at 60 s: nginx keeps its connections longer (stacks/ingress.py).
            idle_timeout=ALB_IDLE_TIMEOUT_SECONDS,
            enable_deletion_protection=s.deletion_protection,
            tags=tags("alb"),
            opts=self.child,
        )
        self.targets = aws.lb.TargetGroup(
            f"{name}-targets",
            port=HTTPS,
            protocol="HTTPS",
            target_type="instance",
            vpc_id=args.vpc_id,
            # An instance leaving the group finishes its requests first.
            deregistration_delay=DRAINING_SECONDS,
            health_check={
                "enabled": True,
                "protocol": "HTTPS",
                "port": "traffic-port",
                "path": HEALTH_CHECK_PATH,
                "matcher": "200",
                "interval": 15,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags=tags("targets"),
            opts=self.child,
        )
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.balancer.arn,
            port=HTTPS,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=certificate_arn,
            default_actions=[{"type": "forward", "target_group_arn": self.targets.arn}],
            tags=tags("https"),
            opts=self.child,
        )
        self.lb_address = self.balancer.dns_name
        self.target_group_arn = self.targets.arn
        return {"lb_address": self.lb_address, "target_group_arn": self.target_group_arn}
