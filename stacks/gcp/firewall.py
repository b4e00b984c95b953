"""Ingress rules: the VM's ingress plan (stacks/ingress.py) as one rule per port, each
scoped to the server's service account. A custom VPC denies all other ingress implicitly,
Postgres included."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.marker import described
from stacks.gcp.settings import GOOGLE_LB_SOURCE_CIDRS, GcpSettings
from stacks.ingress import group_ingress, vm_ingress

DESCRIPTIONS = {
    "https": "MLflow UI and API over HTTPS",
    "http": "ACME HTTP-01 challenge and redirect to HTTPS, from anywhere",
    "ssh": "SSH for bootstrap and administration",
}
#: A group's rules: its instances are reached only through the load balancer and IAP.
GROUP_DESCRIPTIONS = {
    "https": "MLflow over HTTPS from Google's load balancer and health checks only",
    "ssh": "SSH through IAP for bootstrap and administration",
}


@dataclass(frozen=True, kw_only=True)
class FirewallArgs:
    settings: GcpSettings
    network: pulumi.Input[str]
    #: Rules target the VM by its service account, which (unlike a network tag)
    #: only principals allowed to act as that account can attach to an instance.
    target_service_account: pulumi.Input[str]


class Firewall(Component):
    """One ingress rule per purpose (https, http, ssh) of the VM's ingress plan."""

    TYPE = "mlflow-server:gcp:Firewall"

    def declare(self, name: str, args: FirewallArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        # prod logs every connection the rules admit.
        log_config = (
            gcp.compute.FirewallLogConfigArgs(metadata="EXCLUDE_ALL_METADATA")
            if s.common.is_prod
            else None
        )
        # SSH from IAP's range or sshAllowedCidrs: GCP always has a path for it.
        if s.common.is_group:
            # httpsAllowedCidrs apply at the load balancer (Cloud Armor).
            plan = group_ingress(lb_sources=GOOGLE_LB_SOURCE_CIDRS, ssh_cidrs=s.ssh_source_cidrs)
            descriptions = GROUP_DESCRIPTIONS
        else:
            plan = vm_ingress(
                https_cidrs=s.common.https_allowed_cidrs,
                ssh_cidrs=s.ssh_source_cidrs,
                tls_mode=s.common.tls_mode,
            )
            descriptions = DESCRIPTIONS
        self.rules = {
            ingress.purpose: gcp.compute.Firewall(
                f"{name}-{ingress.purpose}",
                network=args.network,
                direction="INGRESS",
                priority=1000,
                allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=[str(ingress.port)])],
                source_ranges=list(ingress.sources),
                target_service_accounts=[args.target_service_account],
                description=described(descriptions[ingress.purpose], s.common.stack),
                log_config=log_config,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for ingress in plan
        }
        return {purpose: rule.id for purpose, rule in self.rules.items()}
