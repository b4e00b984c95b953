"""Wire the GCP components together and return the stack outputs (stacks/contract.py)."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from stacks import contract
from stacks.config import CommonSettings, ConfigReader
from stacks.gcp.balancer import LoadBalancer, LoadBalancerArgs
from stacks.gcp.bucket import ArtifactBucket, ArtifactBucketArgs
from stacks.gcp.database import Database, DatabaseArgs
from stacks.gcp.firewall import Firewall, FirewallArgs
from stacks.gcp.group import ServerGroup, ServerGroupArgs
from stacks.gcp.identity import Identity, IdentityArgs
from stacks.gcp.network import Network, NetworkArgs
from stacks.gcp.server import Server, ServerArgs
from stacks.gcp.settings import GcpSettings, read_gcp
from stacks.outputs import GroupOutputs, contract_outputs
from stacks.providers import provider_options


def deploy(common: CommonSettings) -> dict[str, pulumi.Output]:
    """Validate the GCP settings, then declare the stack; outputs keyed by contract names."""
    s = read_gcp(common, ConfigReader(), ConfigReader("gcp"))
    return declare(s)


def declare(s: GcpSettings) -> dict[str, pulumi.Output]:
    # Every GCP resource goes through this provider, so project, region and zone are
    # the validated ones and default_labels reach every resource that takes labels.
    provider = gcp.Provider(
        "mlflow-gcp",
        project=s.project,
        region=s.region,
        zone=s.zone,
        default_labels=s.labels,
        **provider_options("gcp"),
    )
    opts = pulumi.ResourceOptions(providers=[provider])

    network = Network("mlflow-network", NetworkArgs(settings=s), opts=opts)
    bucket = ArtifactBucket("mlflow-artifacts", ArtifactBucketArgs(settings=s), opts=opts)
    identity = Identity("mlflow-identity", IdentityArgs(settings=s, bucket=bucket.name), opts=opts)
    Firewall(
        "mlflow-firewall",
        FirewallArgs(settings=s, network=network.vpc.id, target_service_account=identity.email),
        opts=opts,
    )
    database = Database(
        "mlflow-db",
        DatabaseArgs(settings=s, network=network.vpc.id, private_services=network.private_services),
        opts=opts,
    )
    group_outputs = None
    if s.common.is_group:
        server = group = ServerGroup(
            "mlflow-group",
            ServerGroupArgs(settings=s, subnet=network.subnet.id, service_account=identity.email),
            opts=opts,
        )
        balancer = LoadBalancer(
            "mlflow-lb",
            LoadBalancerArgs(
                settings=s,
                instance_group=group.instance_group,
                health_check=group.health_check.self_link,
            ),
            opts=opts,
        )
        group_outputs = GroupOutputs(
            lb_address=balancer.lb_address,
            hosts=group.hosts,
            flask_secret_key=group.flask_secret_key,
            kek_passphrase=group.kek_passphrase,
        )
    else:
        server = Server(
            "mlflow-vm",
            ServerArgs(settings=s, subnet=network.subnet.id, service_account=identity.email),
            opts=opts,
        )
    return contract_outputs(
        s.common,
        server=server,
        database=database,
        artifacts_destination=bucket.artifacts_destination,
        region=s.region,
        ssh_access=s.ssh_access,
        cloud_only={
            contract.DB_CONNECTION_NAME: database.connection_name,
            contract.GCP_PROJECT: s.project,
            contract.DB_CA_PEM: database.ca_pem,
        },
        group=group_outputs,
    )
