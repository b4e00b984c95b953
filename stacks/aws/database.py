"""RDS for PostgreSQL: private, encrypted, TLS enforced, sized per environment."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from stacks import naming
from stacks.aws.settings import AwsSettings
from stacks.aws.tags import named
from stacks.component import Component
from stacks.passwords import RDS_PASSWORD, random_password
from stacks.postgres import DB_NAME, DB_PORT, DB_USER, backend_store_uri


@dataclass(frozen=True, kw_only=True)
class DatabaseArgs:
    settings: AwsSettings
    #: Private subnets in two zones.
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]


def rds_ca_bundle_url(region: str) -> str:
    """RDS's certificate bundle for ``region``: every CA that signs RDS server certificates
    there (Amazon RDS User Guide, "Using SSL/TLS to encrypt a connection to a DB
    instance or cluster", Certificate bundles by AWS Region)."""
    return f"https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"


class Database(Component):
    """RDS for PostgreSQL in the private subnets: encrypted, TLS required, reachable only
    from the VM's security group."""

    TYPE = "mlflow-server:aws:Database"

    def declare(self, name: str, args: DatabaseArgs) -> dict[str, pulumi.Input]:
        db = args.settings.database
        own_tags = args.settings.tags(name)

        def tags(suffix: str) -> dict[str, str]:
            return named(own_tags, name, suffix)

        password = random_password(f"{name}-password", RDS_PASSWORD, self.child)
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.subnet_ids,
            description="MLflow database: private subnets in two zones",
            tags=tags("subnets"),
            opts=self.child,
        )
        parameters = aws.rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{db.postgres_version}",
            description="MLflow database: TLS required",
            parameters=[{"name": "rds.force_ssl", "value": "1", "apply_method": "immediate"}],
            tags=tags("params"),
            opts=self.child,
        )
        prod_like = db.final_snapshot_stack is not None
        final_snapshot = None
        if prod_like:
            # A snapshot name must be new at every delete: a stack destroyed and created
            # again under the same name would otherwise fail its next destroy on the
            # snapshot the first one left. The suffix lives and dies with this database.
            suffix = random.RandomId(
                f"{name}-final-snapshot-suffix", byte_length=4, opts=self.child
            )
            final_snapshot = suffix.hex.apply(
                lambda hex_suffix: naming.rds_identifier(
                    naming.final_snapshot_identifier(db.final_snapshot_stack, hex_suffix), 255
                )
            )
        self.instance = aws.rds.Instance(
            f"{name}-instance",
            engine="postgres",
            engine_version=db.postgres_version,
            instance_class=db.instance_class,
            allocated_storage=db.storage_gb,
            max_allocated_storage=db.storage_gb * 5,
            storage_type="gp3",
            storage_encrypted=True,
            db_name=DB_NAME,
            username=DB_USER,
            password=password.result,
            port=DB_PORT,
            db_subnet_group_name=subnets.name,
            parameter_group_name=parameters.name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            multi_az=db.multi_az,
            backup_retention_period=db.backup_retention_days,
            backup_window=db.backup_window,
            maintenance_window=db.maintenance_window,
            auto_minor_version_upgrade=True,
            # Off, RDS refuses a changed major version ("The AllowMajorVersionUpgrade flag
            # must be present..."), so a version bump never slips into an update unnoticed.
            allow_major_version_upgrade=db.allow_major_version_upgrade,
            apply_immediately=db.allow_major_version_upgrade,
            copy_tags_to_snapshot=True,
            deletion_protection=db.deletion_protection,
            skip_final_snapshot=not prod_like,
            final_snapshot_identifier=final_snapshot,
            delete_automated_backups=not prod_like,
            tags=tags("instance"),
            opts=self.child,
        )
        self.address = self.instance.address
        self.backend_store_uri = pulumi.Output.secret(
            pulumi.Output.all(password.result, self.instance.address).apply(
                lambda values: backend_store_uri(values[0], values[1])
            )
        )
        self.max_connections = db.max_connections
        #: The DB instance identifier, which RDS's snapshot API takes.
        self.instance_id = self.instance.identifier
        # The URI names the endpoint's host name, which RDS's certificate carries.
        self.ca_url = rds_ca_bundle_url(args.settings.region)
        return {
            "address": self.address,
            "backend_store_uri": self.backend_store_uri,
            "max_connections": self.max_connections,
            "instance_id": self.instance_id,
            "ca_url": self.ca_url,
        }
