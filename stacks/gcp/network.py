"""A private network for the server: custom VPC, one subnet, private services access."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.marker import described
from stacks.gcp.settings import GcpSettings

#: Prefix length of the range Google's service producers (Cloud SQL) allocate from.
PRIVATE_SERVICES_PREFIX = 20


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    settings: GcpSettings


class Network(Component):
    """A custom-mode VPC (no default subnets, no default firewall rules) with one
    regional subnet, and private services access so Cloud SQL gets a private IP."""

    TYPE = "mlflow-server:gcp:Network"

    def declare(self, name: str, args: NetworkArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        # The stack's name goes into the descriptions of the resources that take no labels.
        stack = s.common.stack
        # GCP sets a network's or subnet's description only at creation; a changed one
        # would replace the VPC (and the database's peering with it) in a running stack.
        # New stacks get the marked description; existing ones keep theirs.
        create_only = pulumi.ResourceOptions(parent=self, ignore_changes=["description"])

        self.vpc = gcp.compute.Network(
            f"{name}-vpc",
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            description=described("MLflow tracking server network", stack),
            opts=create_only,
        )
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            network=self.vpc.id,
            region=s.region,
            ip_cidr_range=s.subnet_cidr,
            # The VM reaches Google APIs (GCS, Cloud SQL Admin) without leaving Google's network.
            private_ip_google_access=True,
            description=described("MLflow tracking server subnet", stack),
            opts=create_only,
        )
        self.private_services_range = gcp.compute.GlobalAddress(
            f"{name}-psa-range",
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            prefix_length=PRIVATE_SERVICES_PREFIX,
            network=self.vpc.id,
            labels=s.labels,
            opts=self.child,
        )
        self.private_services = gcp.servicenetworking.Connection(
            f"{name}-psa",
            network=self.vpc.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[self.private_services_range.name],
            # The API refuses to delete a connection Cloud SQL used until days after the
            # instance is gone; a deletable stack removes the peering instead. A protected
            # stack keeps the default, so a replacement can never cut a live database off.
            deletion_policy=None if s.deletion_protection else "REMOVE_PEERING",
            opts=self.child,
        )

        outputs = {
            "network_id": self.vpc.id,
            "subnet_id": self.subnet.id,
            "private_services_range": self.private_services_range.name,
            "private_services_connection": self.private_services.id,
        }
        if s.common.is_group:
            outputs["nat"] = self._egress(name, s)
        return outputs

    def _egress(self, name: str, s: GcpSettings) -> pulumi.Output[str]:
        """Cloud Router and Cloud NAT: a group's instances have no external address, and
        still fetch packages and MLflow. Outbound only: NAT admits no connection in."""
        self.router = gcp.compute.Router(
            f"{name}-router",
            network=self.vpc.id,
            region=s.region,
            description=described("MLflow tracking servers' egress", s.common.stack),
            opts=self.child,
        )
        # A part of the router (no labels, no description of its own): it goes with it.
        self.nat = gcp.compute.RouterNat(
            f"{name}-nat",
            router=self.router.name,
            region=s.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[
                gcp.compute.RouterNatSubnetworkArgs(
                    name=self.subnet.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"]
                )
            ],
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=self.child,
        )
        return self.nat.id
