"""Wire the AWS components together and return the stack outputs (stacks/contract.py)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from stacks import contract
from stacks.aws.balancer import LoadBalancer, LoadBalancerArgs
from stacks.aws.bucket import ArtifactBucket, ArtifactBucketArgs
from stacks.aws.database import Database, DatabaseArgs
from stacks.aws.firewall import Firewall, FirewallArgs
from stacks.aws.group import ServerGroup, ServerGroupArgs
from stacks.aws.identity import Identity, IdentityArgs
from stacks.aws.network import Network, NetworkArgs
from stacks.aws.server import Server, ServerArgs
from stacks.aws.settings import AwsSettings, read_aws
from stacks.config import CommonSettings
from stacks.outputs import GroupOutputs, contract_outputs
from stacks.providers import provider_options


def deploy(common: CommonSettings) -> dict[str, pulumi.Output]:
    """Validate the AWS settings, then declare the stack; outputs keyed by contract names."""
    s = read_aws(common)
    if common.is_prod and not s.database.multi_az:
        pulumi.log.warn("prod database without Multi-AZ, by explicit awsDbMultiAz=false")
    if not s.database.max_connections:
        pulumi.log.warn(
            f"awsDbInstanceClass {s.database.instance_class}: the kit does not know this class's "
            "memory, so the db_max_connections output is 0 and bootstrap sizes connection "
            "pools for PostgreSQL's default of 100 (set db_max_connections in a settings "
            "file to use more)"
        )
    return declare(s)


def declare(s: AwsSettings) -> dict[str, pulumi.Output]:
    common = s.common
    # Every AWS resource goes through this provider, so each carries the stack's tags.
    options = provider_options("aws")
    if "assume_roles" in options:
        options["assume_roles"] = [aws.ProviderAssumeRoleArgs(**r) for r in options["assume_roles"]]
    provider = aws.Provider(
        "aws", region=s.region, default_tags={"tags": common.resource_labels()}, **options
    )
    opts = pulumi.ResourceOptions(providers=[provider])

    network = Network("network", NetworkArgs(settings=s), opts=opts)
    firewall = Firewall("security", FirewallArgs(settings=s, vpc_id=network.vpc.id), opts=opts)
    database = Database(
        "database",
        DatabaseArgs(
            settings=s,
            subnet_ids=[subnet.id for subnet in network.private_subnets],
            security_group_id=firewall.database.id,
        ),
        opts=opts,
    )
    bucket = ArtifactBucket("artifacts", ArtifactBucketArgs(settings=s), opts=opts)
    identity = Identity("identity", IdentityArgs(settings=s, bucket=bucket.name), opts=opts)
    if common.is_group:
        server, group = declare_group(s, provider, network, firewall, identity)
    else:
        group = None
        server = Server(
            "vm",
            ServerArgs(
                settings=s,
                subnet_id=network.public_subnets[0].id,
                security_group_id=firewall.vm.id,
                instance_profile=identity.instance_profile.name,
            ),
            opts=pulumi.ResourceOptions(
                providers=[provider], depends_on=[network.internet_gateway]
            ),
        )
    return contract_outputs(
        common,
        server=server,
        database=database,
        artifacts_destination=bucket.name.apply(lambda b: f"s3://{b}/{s.artifacts_prefix}"),
        region=s.region,
        ssh_access=s.ssh_access,
        cloud_only={contract.DB_CA_URL: database.ca_url},
        group=group,
    )


def declare_group(s: AwsSettings, provider, network, firewall, identity):
    """``topology: group``: the load balancer, then the group that registers with it."""
    opts = pulumi.ResourceOptions(providers=[provider])
    balancer = LoadBalancer(
        "lb",
        LoadBalancerArgs(
            settings=s,
            vpc_id=network.vpc.id,
            subnet_ids=[subnet.id for subnet in network.public_subnets],
            security_group_id=firewall.lb.id,
        ),
        opts=opts,
    )
    group = ServerGroup(
        "group",
        ServerGroupArgs(
            settings=s,
            subnet_ids=[subnet.id for subnet in network.server_subnets],
            security_group_id=firewall.vm.id,
            instance_profile=identity.instance_profile.name,
            target_group_arn=balancer.target_group_arn,
        ),
        # Instances fetch packages at first boot: their way out must exist by then.
        opts=pulumi.ResourceOptions(providers=[provider], depends_on=[network.nat_gateway]),
    )
    outputs = GroupOutputs(
        lb_address=balancer.lb_address,
        hosts=group.hosts,
        flask_secret_key=group.flask_secret_key,
        kek_passphrase=group.kek_passphrase,
    )
    return group, outputs
