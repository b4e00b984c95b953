"""Wire the AWS components together and return the contract's outputs."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from stacks import contract
from stacks.aws.bucket import ArtifactBucket, BucketArgs
from stacks.aws.database import Database, DatabaseArgs
from stacks.aws.identity import Identity, IdentityArgs
from stacks.aws.network import Network, NetworkArgs
from stacks.aws.security import Security, SecurityArgs
from stacks.aws.settings import read_aws
from stacks.aws.vm import Vm, VmArgs
from stacks.config import CommonSettings
from stacks.providers import provider_options


def deploy(common: CommonSettings) -> dict[str, pulumi.Output]:
    """Declare the AWS stack for ``common``; every setting is validated first."""
    s = read_aws(common)
    if common.is_prod and not s.db_multi_az:
        pulumi.log.warn("prod database without Multi-AZ, by explicit awsDbMultiAz=false")
    # Every AWS resource goes through this provider, so each carries the stack's tags.
    options = provider_options("aws")
    if "assume_roles" in options:
        options["assume_roles"] = [aws.ProviderAssumeRoleArgs(**r) for r in options["assume_roles"]]
    provider = aws.Provider(
        "aws", region=s.region, default_tags={"tags": common.resource_labels()}, **options
    )
    opts = pulumi.ResourceOptions(providers=[provider])

    network = Network("network", NetworkArgs(s.vpc_cidr, s.tags("network")), opts)
    security = Security(
        "security",
        SecurityArgs(
            vpc_id=network.vpc.id,
            https_cidrs=common.https_allowed_cidrs,
            ssh_cidrs=[] if s.session_manager else common.ssh_allowed_cidrs,
            open_http=common.tls_mode == "letsencrypt",
            tags=s.tags("security"),
        ),
        opts,
    )
    database = Database(
        "database",
        DatabaseArgs(
            subnet_ids=[subnet.id for subnet in network.private_subnets],
            security_group_id=security.database.id,
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
        ),
        opts,
    )
    bucket = ArtifactBucket(
        "artifacts",
        BucketArgs(
            partition=s.partition,
            versioning=s.bucket_versioning,
            noncurrent_days=s.bucket_noncurrent_days,
            expire_days=s.bucket_expire_days,
            force_destroy=s.force_destroy,
            tags=s.tags("artifacts"),
        ),
        opts,
    )
    identity = Identity(
        "identity",
        IdentityArgs(bucket.name, s.artifacts_prefix, s.partition, s.session_manager, s.tags("vm")),
        opts,
    )
    vm = Vm(
        "vm",
        VmArgs(
            subnet_id=network.public_subnets[0].id,
            security_group_id=security.vm.id,
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
        pulumi.ResourceOptions(providers=[provider], depends_on=[network.internet_gateway]),
    )
    admin_password = random.RandomPassword("admin-password", length=32, special=False)

    host = pulumi.Output.from_input(common.domain) if common.domain else vm.public_ip
    return {
        contract.CLOUD: pulumi.Output.from_input("aws"),
        contract.HOST: host,
        contract.SSH_USER: pulumi.Output.from_input(common.ssh_user),
        contract.TRACKING_URL: host.apply(lambda h: f"https://{h}"),
        contract.BACKEND_STORE_URI: database.backend_store_uri,
        contract.ARTIFACTS_DESTINATION: bucket.name.apply(
            lambda b: f"s3://{b}/{s.artifacts_prefix}"
        ),
        contract.ADMIN_PASSWORD: pulumi.Output.secret(admin_password.result),
        contract.ENVIRONMENT: pulumi.Output.from_input(common.environment),
        contract.VM_ID: vm.instance.id,
        contract.VM_ZONE: vm.instance.availability_zone,
        contract.REGION: pulumi.Output.from_input(s.region),
        contract.SSH_ACCESS: pulumi.Output.from_input(s.ssh_access),
        **common.server_outputs(),
    }
