"""Ingress rules: HTTPS (and HTTP for ACME) from the allowed CIDRs, SSH from IAP or
listed CIDRs. A custom VPC denies all other ingress implicitly, Postgres included."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.config import ACME_HTTP_SOURCES
from stacks.gcp.marker import described


@dataclass
class FirewallArgs:
    network: pulumi.Input[str]
    #: Rules target the VM by its service account, which (unlike a network tag)
    #: only principals allowed to act as that account can attach to an instance.
    target_service_account: pulumi.Input[str]
    https_cidrs: list[str]
    ssh_cidrs: list[str]
    open_http: bool
    log: bool
    #: The stack name, marked in each rule's description (firewall rules take no labels).
    stack: str


class Firewall(pulumi.ComponentResource):
    """One ingress rule per port group, each scoped to the server's service account."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:gcp:Firewall", name, None, opts)
        self.rules: dict[str, gcp.compute.Firewall] = {}

        def allow(purpose: str, ports: list[str], sources: list[str], description: str) -> None:
            self.rules[purpose] = gcp.compute.Firewall(
                f"{name}-{purpose}",
                network=args.network,
                direction="INGRESS",
                priority=1000,
                allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=ports)],
                source_ranges=sources,
                target_service_accounts=[args.target_service_account],
                description=described(description, args.stack),
                log_config=(
                    gcp.compute.FirewallLogConfigArgs(metadata="EXCLUDE_ALL_METADATA")
                    if args.log
                    else None
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )

        allow("https", ["443"], args.https_cidrs, "MLflow UI and API over HTTPS")
        if args.open_http:
            allow(
                "http",
                ["80"],
                ACME_HTTP_SOURCES,
                "ACME HTTP-01 challenge and redirect to HTTPS, from anywhere",
            )
        allow("ssh", ["22"], args.ssh_cidrs, "SSH for bootstrap and administration")

        self.register_outputs({purpose: rule.id for purpose, rule in self.rules.items()})
