"""VPC with public subnets for the VM and private subnets for the database."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from stacks.aws.settings import AwsSettings
from stacks.aws.tags import named
from stacks.component import Component

#: Both subnet tiers span two zones: an RDS subnet group needs two.
ZONES = 2


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    settings: AwsSettings


def subnet_cidrs(vpc_cidr: str) -> tuple[list[str], list[str]]:
    """Public and private subnet CIDRs: the first and ninth sixteenths of the VPC."""
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=4))
    return [str(b) for b in blocks[:ZONES]], [str(b) for b in blocks[8 : 8 + ZONES]]


def server_subnet_cidrs(vpc_cidr: str) -> list[str]:
    """A group's server subnets: the fifth and sixth sixteenths of the VPC."""
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=4))
    return [str(b) for b in blocks[4 : 4 + ZONES]]


class Network(Component):
    """A VPC with public subnets for the VM and private subnets (their own route table,
    no way out) for the database, in two Availability Zones."""

    TYPE = "mlflow-server:aws:Network"

    def declare(self, name: str, args: NetworkArgs) -> dict[str, pulumi.Input]:

        s = args.settings

        def tags(suffix: str) -> dict[str, str]:
            return named(s.tags(name), name, suffix)

        # Availability Zones only: Local Zones and Wavelength Zones (opted in to by the
        # account) offer neither the instance types nor RDS Multi-AZ the stack uses.
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[{"name": "zone-type", "values": ["availability-zone"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).names.apply(_two_zones)

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=s.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=tags("vpc"),
            opts=self.child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=tags("igw"), opts=self.child
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=self.vpc.id, tags=tags("public"), opts=self.child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_routes.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=gateway.id,
            opts=self.child,
        )
        # Private subnets get a table of their own with only the VPC-local route,
        # so nothing added to the main table later can open a path to the internet.
        private_routes = aws.ec2.RouteTable(
            f"{name}-private-rt", vpc_id=self.vpc.id, tags=tags("private"), opts=self.child
        )

        public_cidrs, private_cidrs = subnet_cidrs(s.vpc_cidr)
        tiers = {
            "public": (public_cidrs, public_routes, []),
            "private": (private_cidrs, private_routes, []),
        }
        for index in range(ZONES):
            zone = zones.apply(lambda names, i=index: names[i])
            for tier, (cidrs, routes, subnets) in tiers.items():
                subnet = aws.ec2.Subnet(
                    f"{name}-{tier}-{index}",
                    vpc_id=self.vpc.id,
                    cidr_block=cidrs[index],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags=tags(f"{tier}-{index}"),
                    opts=self.child,
                )
                aws.ec2.RouteTableAssociation(
                    f"{name}-{tier}-{index}-rt",
                    subnet_id=subnet.id,
                    route_table_id=routes.id,
                    opts=self.child,
                )
                subnets.append(subnet)
        self.public_subnets: list[aws.ec2.Subnet] = tiers["public"][2]
        self.private_subnets: list[aws.ec2.Subnet] = tiers["private"][2]
        self.internet_gateway = gateway

        outputs = {
            "vpc_id": self.vpc.id,
            "public_subnet_ids": [s.id for s in self.public_subnets],
            "private_subnet_ids": [s.id for s in self.private_subnets],
        }
        if s.common.is_group:
            self._servers(name, s, zones, tags)
            outputs["server_subnet_ids"] = [subnet.id for subnet in self.server_subnets]
        return outputs

    def _servers(self, name: str, s: AwsSettings, zones, tags) -> None:
        """A group's subnets: private (no public addresses), in both zones, their way out
        a NAT gateway in the first public subnet; the database's subnets keep none."""
        address = aws.ec2.Eip(f"{name}-nat-ip", domain="vpc", tags=tags("nat-ip"), opts=self.child)
        self.nat_gateway = aws.ec2.NatGateway(
            f"{name}-nat",
            allocation_id=address.allocation_id,
            subnet_id=self.public_subnets[0].id,
            connectivity_type="public",
            tags=tags("nat"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.internet_gateway]),
        )
        routes = aws.ec2.RouteTable(
            f"{name}-servers-rt", vpc_id=self.vpc.id, tags=tags("servers"), opts=self.child
        )
        aws.ec2.Route(
            f"{name}-servers-default",
            route_table_id=routes.id,
            destination_cidr_block="0.0.0.0/0",
            nat_gateway_id=self.nat_gateway.id,
            opts=self.child,
        )
        self.server_subnets: list[aws.ec2.Subnet] = []
        for index, cidr in enumerate(server_subnet_cidrs(s.vpc_cidr)):
            subnet = aws.ec2.Subnet(
                f"{name}-servers-{index}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zones.apply(lambda names, i=index: names[i]),
                map_public_ip_on_launch=False,
                tags=tags(f"servers-{index}"),
                opts=self.child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-servers-{index}-rt",
                subnet_id=subnet.id,
                route_table_id=routes.id,
                opts=self.child,
            )
            self.server_subnets.append(subnet)


def _two_zones(names: list[str]) -> list[str]:
    if len(names) < ZONES:
        raise ValueError(
            f"the region offers {len(names)} available zone(s) {names}; "
            f"the database subnet group needs {ZONES}: choose another aws:region"
        )
    return names[:ZONES]
