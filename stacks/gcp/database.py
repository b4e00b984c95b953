"""Cloud SQL for PostgreSQL on a private IP only, with the ``mlflow`` database and user,
and a server certificate that names that IP, so clients verify it (verify-full)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.settings import GcpSettings
from stacks.passwords import GCP_PASSWORD, random_password
from stacks.postgres import DB_NAME, DB_USER, backend_store_uri


@dataclass(frozen=True, kw_only=True)
class DatabaseArgs:
    settings: GcpSettings
    network: pulumi.Input[str]
    #: The private services connection the instance's private IP is allocated through.
    private_services: pulumi.Resource


#: The server CA mode whose certificates clients can verify by address: the shared,
#: Google-managed CA hierarchy. The per-instance CA (GOOGLE_MANAGED_INTERNAL_CA, the
#: default) signs a server certificate that does not name the instance's private IP, so
#: ``sslmode=verify-full`` to that IP fails (Cloud SQL for PostgreSQL, "Authorize with
#: SSL/TLS certificates", Certificate authority (CA) hierarchies).
SERVER_CA_MODE = "GOOGLE_MANAGED_CAS_CA"


def ca_bundle(certificates) -> str:
    """The PEM bundle of the instance's server CA certificates (``server_ca_certs``)."""
    pems = [c["cert"] if isinstance(c, dict) else c.cert for c in certificates or []]
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in pems if pem)


class Database(Component):
    """A Postgres instance reachable only from the VPC, refusing unencrypted connections,
    its server certificate verifiable by the instance's private IP."""

    TYPE = "mlflow-server:gcp:Database"

    def declare(self, name: str, args: DatabaseArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        db = s.database

        self.password = random_password(f"{name}-password", GCP_PASSWORD, self.child)
        self.instance = gcp.sql.DatabaseInstance(
            f"{name}-instance",
            database_version=db.version,
            region=s.region,
            deletion_protection=db.deletion_protection,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier=db.tier,
                edition=db.edition,
                availability_type=db.availability,
                disk_type="PD_SSD",
                disk_size=db.disk_gb,
                disk_autoresize=True,
                # Protection in the Cloud SQL API too, not only in this program's state.
                deletion_protection_enabled=db.deletion_protection,
                retain_backups_on_delete=db.deletion_protection and db.backups,
                location_preference=gcp.sql.DatabaseInstanceSettingsLocationPreferenceArgs(
                    zone=s.zone
                ),
                ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                    ipv4_enabled=False,
                    private_network=args.network,
                    ssl_mode="ENCRYPTED_ONLY",
                    server_ca_mode=SERVER_CA_MODE,
                ),
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=db.backups,
                    point_in_time_recovery_enabled=db.point_in_time_recovery,
                    start_time=db.backup_start_time,
                    transaction_log_retention_days=db.log_retention_days or None,
                    backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                        retained_backups=db.backup_retained, retention_unit="COUNT"
                    ),
                ),
                maintenance_window=gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
                    day=db.maintenance_day,
                    hour=db.maintenance_hour,
                    update_track=db.update_track,
                ),
                database_flags=[
                    gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(name=flag, value=value)
                    for flag, value in sorted(db.flags.items())
                ],
                user_labels=s.labels,
            ),
            # The private IP is allocated from the peered range, which must exist first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.private_services]),
        )
        # Database and user go with the instance; deleting them on their own would drop
        # the tracking data (database) or fail on a role that owns objects (user).
        self.database = gcp.sql.Database(
            f"{name}-db",
            name=DB_NAME,
            instance=self.instance.name,
            deletion_policy="ABANDON",
            opts=self.child,
        )
        self.user = gcp.sql.User(
            f"{name}-user",
            name=DB_USER,
            instance=self.instance.name,
            password=self.password.result,
            deletion_policy="ABANDON",
            opts=self.child,
        )

        self.connection_name = self.instance.connection_name
        self.private_ip = self.instance.private_ip_address
        self.backend_store_uri = pulumi.Output.secret(
            pulumi.Output.all(self.password.result, self.private_ip).apply(
                lambda a: backend_store_uri(a[0], a[1])
            )
        )
        self.max_connections = db.max_connections
        #: The Cloud SQL instance name, which its Admin API (backupRuns) takes.
        self.instance_id = self.instance.name
        self.ca_pem = self.instance.server_ca_certs.apply(ca_bundle)
        return {
            "connection_name": self.connection_name,
            "private_ip": self.private_ip,
            "backend_store_uri": self.backend_store_uri,
            "max_connections": self.max_connections,
            "instance_id": self.instance_id,
            "ca_pem": self.ca_pem,
        }
