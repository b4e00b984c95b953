"""GCP stack settings: parsed and validated before any resource is declared.

Pure functions over ``ConfigReader`` (stacks/config.py is the only module that
touches ``pulumi.Config``). The environment class picks the defaults; a value a
stack sets explicitly always wins, except where it would break the class's
promise (a prod stack without backups, a test stack that cannot be destroyed).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from stacks import naming
from stacks.config import CommonSettings, ConfigReader, SettingError, cidr
from stacks.connection_limits import cloud_sql_max_connections
from stacks.retention import ArtifactRetention, read_retention

#: Google's IAP TCP forwarding source range (``gcloud compute ssh --tunnel-through-iap``).
IAP_TCP_FORWARDING_CIDR = "35.235.240.0/20"
#: Where Google's external Application Load Balancers and their health checks connect
#: from (Cloud Load Balancing, "Firewall rules": 130.211.0.0/22 and 35.191.0.0/16).
GOOGLE_LB_SOURCE_CIDRS = ("130.211.0.0/22", "35.191.0.0/16")

POSTGRES_VERSIONS = (14, 15, 16, 17, 18)
AVAILABILITY = ("zonal", "regional")
SHARED_CORE_TIERS = ("db-f1-micro", "db-g1-small")
#: A group's default database tier outside prod: 1 dedicated vCPU, 3.75 GiB (100 connections).
GROUP_DB_TIER = "db-custom-1-3840"
_PERF_OPTIMIZED_CPUS = (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)
MULTI_REGIONS = ("US", "EU", "ASIA")
DUAL_REGIONS = ("ASIA1", "EUR4", "EUR5", "EUR7", "EUR8", "NAM4")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]{1,2}$")
_MACHINE_TYPE = re.compile(
    r"^[a-z][a-z0-9]{1,4}-(micro|small|medium|(standard|highmem|highcpu)-\d{1,3}|custom-\d{1,3}-\d{3,7})$"
)
_CUSTOM_TIER = re.compile(r"^db-custom-(\d{1,3})-(\d{3,6})$")
_PERF_TIER = re.compile(r"^db-perf-optimized-N-(\d{1,3})$")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MAINTENANCE = re.compile(r"^([a-z]{3}):(\d{1,2})$")

TIER_ALLOWED = (
    "db-f1-micro, db-g1-small (shared core, not in prod), "
    "db-custom-<vCPUs>-<MiB> (1 or an even 2-96 vCPUs, 0.9-6.5 GiB per vCPU in steps of 256 MiB, "
    "at least 3840 MiB) or db-perf-optimized-N-<vCPUs> (Enterprise Plus)"
)


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The Cloud SQL instance, as the stack's settings choose it."""

    tier: str
    edition: str
    version: str
    availability: str
    disk_gb: int
    backups: bool
    point_in_time_recovery: bool
    backup_start_time: str
    backup_retained: int
    #: Days of transaction logs for point-in-time recovery (0 without it); Cloud SQL
    #: wants fewer days of logs than retained backups, and at most 7 on Enterprise.
    log_retention_days: int
    maintenance_day: int
    maintenance_hour: int
    update_track: str
    flags: dict[str, str]
    deletion_protection: bool
    #: Cloud SQL's default max_connections for the tier (stacks/connection_limits.py).
    max_connections: int


@dataclass(frozen=True, kw_only=True)
class GcpSettings:
    """Everything the GCP components need, validated; built by ``read_gcp``."""

    common: CommonSettings
    project: str
    region: str
    zone: str
    machine_type: str
    boot_disk_gb: int
    subnet_cidr: str
    ssh_source_cidrs: list[str]
    database: DatabaseSettings
    deletion_protection: bool
    bucket_location: str
    artifacts: ArtifactRetention
    service_account_id: str
    #: What a group's instances are named after (``<base>-xxxx``); unused by a single VM.
    base_instance_name: str

    @property
    def labels(self) -> dict[str, str]:
        return self.common.resource_labels()

    @property
    def ssh_access(self) -> str:
        """Port 22 from the listed CIDRs, or from IAP's range only (contract.SSH_ACCESS_MODES)."""
        return "cidrs" if self.common.ssh_allowed_cidrs else "iap"


def _defaults(environment: str, group: bool = False) -> dict[str, object]:
    """Per-environment defaults; keys are the stack setting names without ``gcp``. A
    group's database is regional (HA) in every environment."""
    prod = environment == "prod"
    test = environment == "test"
    return {
        "MachineType": "e2-standard-2" if prod else "e2-small",
        "BootDiskGb": 30 if prod else 20,
        # A group's database is its one shared part: a dedicated core (the smallest
        # Cloud SQL tier the SLA covers with high availability), not a shared one.
        "DbTier": "db-custom-2-7680" if prod else GROUP_DB_TIER if group else "db-g1-small",
        "DbAvailability": "regional" if prod or group else "zonal",
        "DbDiskGb": 20 if prod else 10,
        "DbBackups": not test,
        "DbPointInTimeRecovery": prod,
        "DbBackupRetention": 30 if prod else 7,
        "DeletionProtection": not test,
    }


def read_gcp(common: CommonSettings, reader: ConfigReader, provider: ConfigReader) -> GcpSettings:
    """Validate the GCP settings of a stack.

    ``reader`` reads the project namespace (``mlflow-server:gcp*`` keys), ``provider``
    the ``gcp`` namespace (``gcp:project``, ``gcp:region``, ``gcp:zone``).
    """
    env = common.environment
    default = _defaults(env, common.is_group)

    project = provider.require("project", "a GCP project ID such as my-project-123")
    if not _PROJECT.match(project):
        raise SettingError(
            provider.qualified("project"),
            project,
            "a GCP project ID: 6-30 lowercase letters, digits and hyphens, starting with a letter",
        )
    region = provider.require("region", "a GCP region such as europe-west1")
    if not _REGION.match(region):
        raise SettingError(
            provider.qualified("region"), region, "a GCP region such as europe-west1 or us-central1"
        )
    zone = provider.require("zone", f"a zone of {region} such as {region}-b")
    if not re.fullmatch(re.escape(region) + r"-[a-z]", zone):
        raise SettingError(
            provider.qualified("zone"), zone, f"a zone of region {region}, such as {region}-b"
        )

    machine_type = reader.get("gcpMachineType", default["MachineType"])
    if not _MACHINE_TYPE.match(machine_type):
        raise SettingError(
            reader.qualified("gcpMachineType"),
            machine_type,
            "a Compute Engine machine type such as e2-small or e2-standard-2",
        )
    boot_disk_gb = reader.get_int("gcpBootDiskGb", default["BootDiskGb"], 10, 2000)
    subnet_cidr = _private_cidr(
        reader, "gcpSubnetCidr", reader.get("gcpSubnetCidr", "10.20.0.0/24")
    )

    if not common.ssh_public_keys:
        raise SettingError(
            reader.qualified("sshPublicKeys"),
            [],
            "at least one OpenSSH public key: the VM ignores project-wide keys, "
            "so the login user needs its own",
        )
    ssh_source = common.ssh_allowed_cidrs or [IAP_TCP_FORWARDING_CIDR]

    db_tier = reader.get("gcpDbTier", default["DbTier"])
    db_edition = _tier_edition(reader, db_tier)
    if common.is_group and db_tier in SHARED_CORE_TIERS:
        # Cloud SQL "Operational guidelines": "Only Cloud SQL instances configured for high
        # availability with at least one dedicated CPU are covered by the Cloud SQL SLA.
        # Shared-core instances and single-zone instances are not covered by the SLA."
        raise SettingError(
            reader.qualified("gcpDbTier"),
            db_tier,
            "a dedicated-core tier with topology group (a shared-core instance is not covered "
            f"by the Cloud SQL SLA even with high availability), e.g. {GROUP_DB_TIER}: "
            + TIER_ALLOWED,
        )
    if env == "prod" and db_tier in SHARED_CORE_TIERS:
        raise SettingError(
            reader.qualified("gcpDbTier"),
            db_tier,
            "a dedicated-core tier in prod (shared-core tiers have no SLA): " + TIER_ALLOWED,
        )
    db_version = reader.get_int("gcpDbVersion", 16, POSTGRES_VERSIONS[0], POSTGRES_VERSIONS[-1])
    db_availability = reader.get_choice(
        "gcpDbAvailability", AVAILABILITY, default["DbAvailability"]
    )
    if common.is_group and db_availability != "regional":
        raise SettingError(
            reader.qualified("gcpDbAvailability"),
            db_availability,
            "regional with topology group: the group's instances survive a zone's loss, "
            "so the database must too",
        )
    db_disk_gb = reader.get_int("gcpDbDiskGb", default["DbDiskGb"], 10, 65536)

    db_backups = reader.get_bool("gcpDbBackups", default["DbBackups"])
    if env == "prod" and not db_backups:
        raise SettingError(
            reader.qualified("gcpDbBackups"), False, "true in a prod stack (prod keeps backups)"
        )
    db_pitr = reader.get_bool(
        "gcpDbPointInTimeRecovery", default["DbPointInTimeRecovery"] and db_backups
    )
    if db_pitr and not db_backups:
        raise SettingError(
            reader.qualified("gcpDbPointInTimeRecovery"),
            True,
            "true only together with gcpDbBackups true",
        )
    backup_start = reader.get("gcpDbBackupStartTime", "03:00")
    if not _TIME.match(backup_start):
        raise SettingError(
            reader.qualified("gcpDbBackupStartTime"), backup_start, "a UTC time HH:MM such as 03:00"
        )
    backup_retained = reader.get_int("gcpDbBackupRetention", default["DbBackupRetention"], 1, 365)
    if db_pitr and backup_retained < 2:
        raise SettingError(
            reader.qualified("gcpDbBackupRetention"),
            backup_retained,
            "at least 2 with point-in-time recovery (transaction logs are kept for fewer days "
            "than backups)",
        )

    day, hour = _maintenance_window(reader, reader.get("gcpDbMaintenanceWindow", "sun:04"))

    deletion_protection = reader.get_bool("gcpDeletionProtection", default["DeletionProtection"])
    if env == "test" and deletion_protection:
        raise SettingError(
            reader.qualified("gcpDeletionProtection"),
            True,
            "false in a test stack (test stacks go in one `pulumi destroy`)",
        )

    bucket_location = _bucket_location(reader, reader.get("gcpBucketLocation", region).upper())
    artifacts = read_retention(
        reader,
        env,
        keys=("gcpBucketVersioning", "gcpBucketNoncurrentDays", "gcpBucketExpireDays"),
        max_expire_days=3650,
    )

    return GcpSettings(
        common=common,
        project=project,
        region=region,
        zone=zone,
        machine_type=machine_type,
        boot_disk_gb=boot_disk_gb,
        subnet_cidr=subnet_cidr,
        ssh_source_cidrs=ssh_source,
        database=DatabaseSettings(
            tier=db_tier,
            max_connections=cloud_sql_max_connections(db_tier),
            edition=db_edition,
            version=f"POSTGRES_{db_version}",
            availability=db_availability.upper(),
            disk_gb=db_disk_gb,
            backups=db_backups,
            point_in_time_recovery=db_pitr,
            backup_start_time=backup_start,
            backup_retained=backup_retained,
            log_retention_days=min(7, backup_retained - 1) if db_pitr else 0,
            maintenance_day=day,
            maintenance_hour=hour,
            # prod takes maintenance updates after they have run elsewhere first.
            update_track="stable" if env == "prod" else "canary",
            flags=_db_flags(env),
            deletion_protection=deletion_protection,
        ),
        deletion_protection=deletion_protection,
        bucket_location=bucket_location,
        artifacts=artifacts,
        service_account_id=naming.service_account_id(common.stack),
        base_instance_name=naming.gcp_base_instance_name(common.stack),
    )


def _db_flags(environment: str) -> dict[str, str]:
    """Cloud SQL flags: connection and lock logging everywhere (CIS benchmark)."""
    flags = {
        "log_connections": "on",
        "log_disconnections": "on",
        "log_checkpoints": "on",
        "log_lock_waits": "on",
        "log_temp_files": "0",
        # prod logs no statement text (CIS: statements can carry sensitive values);
        # dev and test log statements slower than a second to find slow MLflow queries.
        "log_min_duration_statement": "-1" if environment == "prod" else "1000",
    }
    return flags


def _tier_edition(reader: ConfigReader, tier: str) -> str:
    """The Cloud SQL edition a tier belongs to, or a SettingError for an unknown tier."""
    key = reader.qualified("gcpDbTier")
    if tier in SHARED_CORE_TIERS:
        return "ENTERPRISE"
    custom = _CUSTOM_TIER.match(tier)
    if custom:
        cpus, mib = int(custom.group(1)), int(custom.group(2))
        cpus_ok = cpus == 1 or (cpus % 2 == 0 and 2 <= cpus <= 96)
        memory_ok = mib % 256 == 0 and mib >= 3840 and 922 * cpus <= mib <= 6656 * cpus
        if cpus_ok and memory_ok:
            return "ENTERPRISE"
    perf = _PERF_TIER.match(tier)
    if perf and int(perf.group(1)) in _PERF_OPTIMIZED_CPUS:
        return "ENTERPRISE_PLUS"
    raise SettingError(key, tier, TIER_ALLOWED)


def _private_cidr(reader: ConfigReader, key: str, value: str) -> str:
    canonical = cidr(reader.qualified(key), value)
    network = ipaddress.ip_network(canonical)
    if network.version != 4 or not network.is_private or not 16 <= network.prefixlen <= 29:
        raise SettingError(
            reader.qualified(key),
            value,
            "a private IPv4 range from /16 to /29 such as 10.20.0.0/24",
        )
    return canonical


def _maintenance_window(reader: ConfigReader, value: str) -> tuple[int, int]:
    """``ddd:hh`` (UTC) as Cloud SQL's day (1 = Monday) and hour."""
    match = _MAINTENANCE.match(value.lower())
    if not match or match.group(1) not in WEEKDAYS or not 0 <= int(match.group(2)) <= 23:
        raise SettingError(
            reader.qualified("gcpDbMaintenanceWindow"),
            value,
            "a UTC weekday and hour as ddd:hh, such as sun:04",
        )
    return WEEKDAYS.index(match.group(1)) + 1, int(match.group(2))


def _bucket_location(reader: ConfigReader, value: str) -> str:
    if value in MULTI_REGIONS or value in DUAL_REGIONS or _REGION.match(value.lower()):
        return value
    raise SettingError(
        reader.qualified("gcpBucketLocation"),
        value,
        "a region such as EUROPE-WEST1, a multi-region ("
        + ", ".join(MULTI_REGIONS)
        + ") or a dual-region ("
        + ", ".join(DUAL_REGIONS)
        + ")",
    )
