"""Ingress rules: the VM's ingress plan (stacks/ingress.py) as one rule per port, each
scoped to the server's service account. A custom VPC denies all other ingress implicitly,
Postgres included."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.gcp.marker import described
from stacks.ingress import vm_ingress

DESCRIPTIONS = {
    "https": "MLflow UI and API over HTTPS",
    "http": "ACME HTTP-01 challenge and redirect to HTTPS, from anywhere",
    "ssh": "SSH for bootstrap and administration",
}


@dataclass(frozen=True, kw_only=True)
class FirewallArgs:
    network: pulumi.Input[str]
    #: Rules target the VM by its service account, which (unlike a network tag)
    #: only principals allowed to act as that account can attach to an instance.
    target_service_account: pulumi.Input[str]
    https_cidrs: list[str]
    #: IAP's range or sshAllowedCidrs: GCP always has a path for SSH.
    ssh_cidrs: list[str]
    #: Let's Encrypt's HTTP-01 challenge needs port 80 from anywhere.
    open_http: bool
    log: bool
    #: The stack name, marked in each rule's description (firewall rules take no labels).
    stack: str


class Firewall(pulumi.ComponentResource):
    """One ingress rule per purpose (https, http, ssh) of the VM's ingress plan."""

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:gcp:Firewall", name, None, opts)
        log_config = (
            gcp.compute.FirewallLogConfigArgs(metadata="EXCLUDE_ALL_METADATA") if args.log else None
        )
        self.rules = {
            ingress.purpose: gcp.compute.Firewall(
                f"{name}-{ingress.purpose}",
                network=args.network,
                direction="INGRESS",
                priority=1000,
                allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=[str(ingress.port)])],
                source_ranges=list(ingress.sources),
                target_service_accounts=[args.target_service_account],
                description=described(DESCRIPTIONS[ingress.purpose], args.stack),
                log_config=log_config,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for ingress in vm_ingress(
                https_cidrs=args.https_cidrs, ssh_cidrs=args.ssh_cidrs, open_http=args.open_http
            )
        }
        self.register_outputs({purpose: rule.id for purpose, rule in self.rules.items()})
