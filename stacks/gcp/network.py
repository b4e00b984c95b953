"""A private network for the server: custom VPC, one subnet, private services access."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.gcp.marker import described

#: Prefix length of the range Google's service producers (Cloud SQL) allocate from.
PRIVATE_SERVICES_PREFIX = 20


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    region: str
    subnet_cidr: str
    labels: dict[str, str]
    #: Remove the Cloud SQL peering on destroy so the VPC can go in the same run.
    deletable: bool
    #: The stack name, marked in the descriptions of resources that take no labels.
    stack: str


class Network(pulumi.ComponentResource):
    """A custom-mode VPC (no default subnets, no default firewall rules) with one
    regional subnet, and private services access so Cloud SQL gets a private IP."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:gcp:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # GCP sets a network's or subnet's description only at creation; a changed one
        # would replace the VPC (and the database's peering with it) in a running stack.
        # New stacks get the marked description; existing ones keep theirs.
        create_only = pulumi.ResourceOptions(parent=self, ignore_changes=["description"])

        self.vpc = gcp.compute.Network(
            f"{name}-vpc",
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            description=described("MLflow tracking server network", args.stack),
            opts=create_only,
        )
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            network=self.vpc.id,
            region=args.region,
            ip_cidr_range=args.subnet_cidr,
            # The VM reaches Google APIs (GCS, Cloud SQL Admin) without leaving Google's network.
            private_ip_google_access=True,
            description=described("MLflow tracking server subnet", args.stack),
            opts=create_only,
        )
        self.private_services_range = gcp.compute.GlobalAddress(
            f"{name}-psa-range",
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            prefix_length=PRIVATE_SERVICES_PREFIX,
            network=self.vpc.id,
            labels=args.labels,
            opts=child,
        )
        self.private_services = gcp.servicenetworking.Connection(
            f"{name}-psa",
            network=self.vpc.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[self.private_services_range.name],
            # The API refuses to delete a connection Cloud SQL used until days after the
            # instance is gone; a deletable stack removes the peering instead. A protected
            # stack keeps the default, so a replacement can never cut a live database off.
            deletion_policy="REMOVE_PEERING" if args.deletable else None,
            opts=child,
        )

        self.register_outputs(
            {
                "network_id": self.vpc.id,
                "subnet_id": self.subnet.id,
                "private_services_range": self.private_services_range.name,
                "private_services_connection": self.private_services.id,
            }
        )
