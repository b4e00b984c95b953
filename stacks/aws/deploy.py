"""Wire the AWS components together and return the stack outputs (stacks/contract.py)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from stacks.aws.bucket import ArtifactBucket, ArtifactBucketArgs
from stacks.aws.database import Database, DatabaseArgs
from stacks.aws.firewall import Firewall, FirewallArgs
from stacks.aws.identity import Identity, IdentityArgs
from stacks.aws.network import Network, NetworkArgs
from stacks.aws.server import Server, ServerArgs
from stacks.aws.settings import AwsSettings, read_aws
from stacks.config import CommonSettings
from stacks.outputs import Exports, contract_outputs
from stacks.providers import provider_options


def deploy(common: CommonSettings) -> dict[str, pulumi.Output]:
    """Validate the AWS settings, then declare the stack; outputs keyed by contract names."""
    s = read_aws(common)
    if common.is_prod and not s.db_multi_az:
        pulumi.log.warn("prod database without Multi-AZ, by explicit awsDbMultiAz=false")
    if not s.db_max_connections:
        pulumi.log.warn(
            f"awsDbInstanceClass {s.db_instance_class}: the kit does not know this class's "
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

    network = Network("network", NetworkArgs(cidr=s.vpc_cidr, tags=s.tags("network")), opts=opts)
    firewall = Firewall(
        "security",
        FirewallArgs(
            vpc_id=network.vpc.id,
            https_cidrs=common.https_allowed_cidrs,
            ssh_cidrs=[] if s.session_manager else common.ssh_allowed_cidrs,
            open_http=common.tls_mode == "letsencrypt",
            tags=s.tags("security"),
        ),
        opts=opts,
    )
    database = Database(
        "database",
        DatabaseArgs(
            subnet_ids=[subnet.id for subnet in network.private_subnets],
            security_group_id=firewall.database.id,
            instance_class=s.db_instance_class,
            storage_gb=s.db_storage_gb,
            postgres_version=s.postgres_version,
            multi_az=s.db_multi_az,
            allow_major_version_upgrade=s.db_allow_major_version_upgrade,
            backup_retention_days=s.db_backup_retention_days,
            backup_window=s.db_backup_window,
            maintenance_window=s.db_maintenance_window,
            deletion_protection=s.deletion_protection,
            final_snapshot_stack=s.final_snapshot_stack,
            tags=s.tags("database"),
            max_connections=s.db_max_connections,
        ),
        opts=opts,
    )
    bucket = ArtifactBucket(
        "artifacts",
        ArtifactBucketArgs(
            partition=s.partition,
            versioning=s.bucket_versioning,
            noncurrent_days=s.bucket_noncurrent_days,
            expire_days=s.bucket_expire_days,
            force_destroy=s.force_destroy,
            tags=s.tags("artifacts"),
        ),
        opts=opts,
    )
    identity = Identity(
        "identity",
        IdentityArgs(
            bucket=bucket.name,
            prefix=s.artifacts_prefix,
            partition=s.partition,
            session_manager=s.session_manager,
            tags=s.tags("vm"),
        ),
        opts=opts,
    )
    server = Server(
        "vm",
        ServerArgs(
            subnet_id=network.public_subnets[0].id,
            security_group_id=firewall.vm.id,
            instance_profile=identity.instance_profile.name,
            instance_type=s.instance_type,
            root_volume_gb=s.root_volume_gb,
            ssh_user=common.ssh_user,
            ssh_public_keys=common.ssh_public_keys,
            termination_protection=s.deletion_protection,
            tags=s.tags("vm"),
            session_manager=s.session_manager,
            region=s.region,
        ),
        opts=pulumi.ResourceOptions(providers=[provider], depends_on=[network.internet_gateway]),
    )
    return contract_outputs(
        common,
        Exports(
            public_ip=server.public_ip,
            backend_store_uri=database.backend_store_uri,
            artifacts_destination=bucket.name.apply(lambda b: f"s3://{b}/{s.artifacts_prefix}"),
            admin_password=server.admin_password,
            vm_id=server.vm_id,
            vm_zone=server.vm_zone,
            region=s.region,
            ssh_access=s.ssh_access,
            db_max_connections=database.max_connections,
            cloud_only={},
        ),
    )
