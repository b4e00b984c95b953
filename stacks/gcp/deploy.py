"""Wire the GCP components together and return the stack outputs (stacks/contract.py)."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from stacks import contract
from stacks.config import CommonSettings, ConfigReader
from stacks.gcp.bucket import ArtifactBucket, ArtifactBucketArgs
from stacks.gcp.database import Database, DatabaseArgs
from stacks.gcp.firewall import Firewall, FirewallArgs
from stacks.gcp.identity import Identity, IdentityArgs
from stacks.gcp.network import Network, NetworkArgs
from stacks.gcp.server import Server, ServerArgs
from stacks.gcp.settings import GcpSettings, read_gcp
from stacks.outputs import contract_outputs
from stacks.providers import provider_options


def deploy(common: CommonSettings) -> dict[str, pulumi.Output]:
    """Validate the GCP settings, then declare the stack; outputs keyed by contract names."""
    s = read_gcp(common, ConfigReader(), ConfigReader("gcp"))
    return declare(s)


def declare(s: GcpSettings) -> dict[str, pulumi.Output]:
    labels = s.labels
    # Every GCP resource goes through this provider, so project, region and zone are
    # the validated ones and default_labels reach every resource that takes labels.
    provider = gcp.Provider(
        "mlflow-gcp",
        project=s.project,
        region=s.region,
        zone=s.zone,
        default_labels=labels,
        **provider_options("gcp"),
    )
    opts = pulumi.ResourceOptions(providers=[provider])

    network = Network(
        "mlflow-network",
        NetworkArgs(
            region=s.region,
            subnet_cidr=s.subnet_cidr,
            labels=labels,
            deletable=not s.deletion_protection,
            stack=s.common.stack,
        ),
        opts=opts,
    )
    bucket = ArtifactBucket(
        "mlflow-artifacts",
        ArtifactBucketArgs(location=s.bucket_location, retention=s.artifacts, labels=labels),
        opts=opts,
    )
    identity = Identity(
        "mlflow-identity",
        IdentityArgs(
            project=s.project,
            account_id=s.service_account_id,
            bucket=bucket.name,
            stack=s.common.stack,
        ),
        opts=opts,
    )
    Firewall(
        "mlflow-firewall",
        FirewallArgs(
            network=network.vpc.id,
            target_service_account=identity.email,
            https_cidrs=s.common.https_allowed_cidrs,
            ssh_cidrs=s.ssh_source_cidrs,
            open_http=s.common.tls_mode == "letsencrypt",
            log=s.common.is_prod,
            stack=s.common.stack,
        ),
        opts=opts,
    )
    database = Database(
        "mlflow-db",
        DatabaseArgs(
            settings=s.database,
            region=s.region,
            zone=s.zone,
            network=network.vpc.id,
            private_services=network.private_services,
            labels=labels,
        ),
        opts=opts,
    )
    server = Server(
        "mlflow-vm",
        ServerArgs(
            region=s.region,
            zone=s.zone,
            machine_type=s.machine_type,
            boot_disk_gb=s.boot_disk_gb,
            subnet=network.subnet.id,
            service_account=identity.email,
            ssh_user=s.common.ssh_user,
            ssh_public_keys=s.common.ssh_public_keys,
            deletion_protection=s.deletion_protection,
            labels=labels,
        ),
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
        },
    )
