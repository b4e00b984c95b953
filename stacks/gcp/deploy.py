"""Wire the GCP components together and return the stack outputs (stacks/contract.py)."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from stacks import contract
from stacks.config import CommonSettings, ConfigReader
from stacks.gcp.bucket import ArtifactBucket, BucketArgs
from stacks.gcp.database import Database, DatabaseArgs
from stacks.gcp.firewall import Firewall, FirewallArgs
from stacks.gcp.identity import Identity, IdentityArgs
from stacks.gcp.network import Network, NetworkArgs
from stacks.gcp.settings import GcpSettings, read_gcp
from stacks.gcp.vm import Server, ServerArgs
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
    deletable = not s.deletion_protection

    network = Network(
        "mlflow-network",
        NetworkArgs(s.region, s.subnet_cidr, labels, deletable, s.common.stack),
        opts,
    )
    bucket = ArtifactBucket(
        "mlflow-artifacts",
        BucketArgs(
            s.bucket_location,
            s.bucket_versioning,
            s.bucket_noncurrent_days,
            s.bucket_expire_days,
            s.bucket_force_destroy,
            labels,
        ),
        opts,
    )
    identity = Identity(
        "mlflow-identity",
        IdentityArgs(s.project, s.service_account_id, bucket.name, s.common.stack),
        opts,
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
        opts,
    )
    database = Database(
        "mlflow-db",
        DatabaseArgs(
            region=s.region,
            zone=s.zone,
            network=network.vpc.id,
            private_services=network.private_services,
            tier=s.db_tier,
            edition=s.db_edition,
            version=s.db_version,
            availability=s.db_availability,
            disk_gb=s.db_disk_gb,
            backups=s.db_backups,
            point_in_time_recovery=s.db_point_in_time_recovery,
            backup_start_time=s.db_backup_start_time,
            backup_retained=s.db_backup_retained,
            log_retention_days=s.db_log_retention_days,
            maintenance_day=s.db_maintenance_day,
            maintenance_hour=s.db_maintenance_hour,
            update_track=s.db_update_track,
            flags=s.db_flags,
            deletion_protection=s.deletion_protection,
            labels=labels,
        ),
        opts,
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
        opts,
    )

    host = pulumi.Output.from_input(s.common.domain) if s.common.domain else server.external_ip
    return {
        contract.CLOUD: pulumi.Output.from_input("gcp"),
        contract.HOST: host,
        contract.SSH_USER: pulumi.Output.from_input(s.common.ssh_user),
        contract.TRACKING_URL: host.apply(lambda h: f"https://{h}"),
        contract.BACKEND_STORE_URI: database.backend_store_uri,
        contract.ARTIFACTS_DESTINATION: bucket.artifacts_destination,
        contract.ADMIN_PASSWORD: pulumi.Output.secret(server.admin_password.result),
        contract.DB_CONNECTION_NAME: database.connection_name,
        contract.ENVIRONMENT: pulumi.Output.from_input(s.common.environment),
        contract.VM_ID: server.instance.name,
        contract.VM_ZONE: pulumi.Output.from_input(s.zone),
        contract.REGION: pulumi.Output.from_input(s.region),
        contract.GCP_PROJECT: pulumi.Output.from_input(s.project),
        contract.SSH_ACCESS: pulumi.Output.from_input(
            "cidrs" if s.common.ssh_allowed_cidrs else "iap"
        ),
        **s.common.server_outputs(),
    }
