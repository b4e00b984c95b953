"""AWS settings: parsed and validated through ConfigReader before any resource exists.

Keys live in the project namespace with an ``aws`` prefix (``mlflow-server:awsDbMultiAz``)
so they never collide with the GCP keys in the same Pulumi.yaml; the region is the AWS
provider's own ``aws:region``. Defaults depend on the environment class (see ``DEFAULTS``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from stacks.config import CommonSettings, ConfigReader, SettingError
from stacks.connection_limits import rds_max_connections
from stacks.contract import ARTIFACTS_PREFIX
from stacks.retention import ArtifactRetention, read_retention

SSH_ACCESS = ("cidrs", "session-manager")
#: Key types EC2 ImportKeyPair accepts (EC2 API reference, ImportKeyPair).
EC2_KEY_PAIR_TYPES = ("ssh-ed25519", "ssh-rsa")
POSTGRES_VERSIONS = ("14", "15", "16", "17")
_REGION = re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx|cn|us-gov)-[a-z]+-\d{1,2}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# Graviton families (t4g, m7g, c7gn, r6gd, ...) cannot boot the amd64 Debian image.
_ARM_FAMILY = re.compile(r"^[a-z]+\d+g[a-z]*\.")
_DB_CLASS = re.compile(r"^db\.[a-z0-9-]+\.[a-z0-9]+$")
_DAY = "(mon|tue|wed|thu|fri|sat|sun)"
_HHMM = r"([01]\d|2[0-3]):[0-5]\d"
_MAINTENANCE = re.compile(rf"^{_DAY}:{_HHMM}-{_DAY}:{_HHMM}$")
_BACKUP_WINDOW = re.compile(rf"^{_HHMM}-{_HHMM}$")

#: Defaults per environment class (the bucket's: stacks/retention.py, as on GCP).
DEFAULTS = {
    "dev": {
        "instance": "t3.medium",
        "db_class": "db.t4g.micro",
        "multi_az": False,
        "backups": 1,
        "protect": True,
    },
    "test": {
        "instance": "t3.medium",
        "db_class": "db.t4g.micro",
        "multi_az": False,
        "backups": 0,
        "protect": False,
    },
    "prod": {
        "instance": "t3.large",
        "db_class": "db.t4g.small",
        "multi_az": True,
        "backups": 7,
        "protect": True,
    },
}


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The RDS instance, as the stack's settings choose it."""

    instance_class: str
    storage_gb: int
    postgres_version: str
    multi_az: bool
    #: RDS refuses a major version change unless the update allows it explicitly (the
    #: update that has it applies at once).
    allow_major_version_upgrade: bool
    backup_retention_days: int
    backup_window: str
    maintenance_window: str
    deletion_protection: bool
    #: None skips the final snapshot (test and dev stacks); prod names it after the stack.
    final_snapshot_stack: str | None
    #: RDS's default max_connections for the class (stacks/connection_limits.py); 0 for a
    #: class whose memory the kit does not know.
    max_connections: int


@dataclass(frozen=True, kw_only=True)
class AwsSettings:
    """Everything the AWS components need, already validated."""

    common: CommonSettings
    region: str
    partition: str
    vpc_cidr: str
    ssh_access: str
    instance_type: str
    root_volume_gb: int
    database: DatabaseSettings
    deletion_protection: bool
    artifacts: ArtifactRetention
    artifacts_prefix: str = ARTIFACTS_PREFIX

    @property
    def session_manager(self) -> bool:
        return self.ssh_access == "session-manager"

    def tags(self, name: str) -> dict[str, str]:
        """Explicit tags for one resource: the stack's labels plus a Name tag."""
        return {**self.common.resource_labels(), "Name": f"{self.common.stack}-{name}"}


def read_aws(common: CommonSettings) -> AwsSettings:
    """Read and validate the AWS settings for ``common``'s environment class."""
    provider = ConfigReader("aws")
    config = ConfigReader()
    env = common.environment
    defaults = DEFAULTS[env]

    region = provider.require("region", "an AWS region such as eu-central-1")
    if not _REGION.match(region):
        raise SettingError(
            provider.qualified("region"), region, "an AWS region such as eu-central-1 or us-east-1"
        )
    partition = (
        "aws-cn"
        if region.startswith("cn-")
        else "aws-us-gov"
        if region.startswith("us-gov-")
        else "aws"
    )

    vpc_cidr = _vpc_cidr(config)
    ssh_access = _ssh_access(config, common)
    if not common.ssh_public_keys:
        raise SettingError(
            config.qualified("sshPublicKeys"),
            [],
            "at least one OpenSSH public key: `fab bootstrap` logs in over SSH "
            "(directly or through Session Manager)",
        )

    first_key = common.ssh_public_keys[0].split()[0]
    if first_key not in EC2_KEY_PAIR_TYPES:
        raise SettingError(
            config.qualified("sshPublicKeys"),
            common.ssh_public_keys[0][:40],
            "an ssh-ed25519 or ssh-rsa key first: the first key becomes the EC2 key pair, "
            "and EC2 imports only RSA and ED25519 keys (ECDSA keys may follow it)",
        )

    instance_type = config.get("awsInstanceType", defaults["instance"])
    if not _INSTANCE_TYPE.match(instance_type) or _ARM_FAMILY.match(instance_type):
        raise SettingError(
            config.qualified("awsInstanceType"),
            instance_type,
            "an x86_64 EC2 instance type such as t3.medium (the Debian image is amd64)",
        )
    root_volume_gb = config.get_int("awsRootVolumeGb", 30, 10, 2048)

    db_instance_class = config.get("awsDbInstanceClass", defaults["db_class"])
    if not _DB_CLASS.match(db_instance_class):
        raise SettingError(
            config.qualified("awsDbInstanceClass"),
            db_instance_class,
            "an RDS instance class such as db.t4g.micro",
        )
    db_storage_gb = config.get_int("awsDbStorageGb", 20, 20, 65536)
    postgres_version = config.get_choice("awsPostgresVersion", POSTGRES_VERSIONS, "16")
    db_multi_az = config.get_bool("awsDbMultiAz", defaults["multi_az"] or common.is_group)
    if common.is_group and not db_multi_az:
        raise SettingError(
            config.qualified("awsDbMultiAz"),
            "false",
            "true with topology group: the group's instances survive a zone's loss, "
            "so the database must too",
        )
    allow_major_upgrade = config.get_bool("awsDbAllowMajorVersionUpgrade", False)

    backups = config.get_int("awsDbBackupRetentionDays", defaults["backups"], 0, 35)
    if common.is_prod and backups == 0:
        raise SettingError(
            config.qualified("awsDbBackupRetentionDays"),
            "0",
            "1 to 35 in a prod stack: prod databases keep backups",
        )
    backup_window = config.get("awsDbBackupWindow", "01:00-01:30")
    if not _BACKUP_WINDOW.match(backup_window):
        raise SettingError(
            config.qualified("awsDbBackupWindow"),
            backup_window,
            "a daily UTC window hh:mm-hh:mm such as 01:00-01:30",
        )
    maintenance = config.get("awsDbMaintenanceWindow", "sun:03:00-sun:04:00")
    if not _MAINTENANCE.match(maintenance):
        raise SettingError(
            config.qualified("awsDbMaintenanceWindow"),
            maintenance,
            "a weekly UTC window ddd:hh:mm-ddd:hh:mm such as sun:03:00-sun:04:00",
        )
    if _overlaps(backup_window, maintenance):
        raise SettingError(
            config.qualified("awsDbMaintenanceWindow"),
            maintenance,
            f"a window not overlapping the backup window {backup_window}",
        )

    protect = config.get_bool("awsDeletionProtection", defaults["protect"])
    if common.is_prod and not protect:
        raise SettingError(
            config.qualified("awsDeletionProtection"), "false", "true in a prod stack"
        )
    if common.is_test and protect:
        raise SettingError(
            config.qualified("awsDeletionProtection"),
            "true",
            "false in a test stack: test stacks go away in one destroy",
        )

    return AwsSettings(
        common=common,
        region=region,
        partition=partition,
        vpc_cidr=vpc_cidr,
        ssh_access=ssh_access,
        instance_type=instance_type,
        root_volume_gb=root_volume_gb,
        database=DatabaseSettings(
            instance_class=db_instance_class,
            max_connections=rds_max_connections(db_instance_class) or 0,
            storage_gb=db_storage_gb,
            postgres_version=postgres_version,
            multi_az=db_multi_az,
            allow_major_version_upgrade=allow_major_upgrade,
            backup_retention_days=backups,
            backup_window=backup_window,
            maintenance_window=maintenance,
            deletion_protection=protect,
            final_snapshot_stack=common.stack if common.is_prod else None,
        ),
        deletion_protection=protect,
        artifacts=read_retention(
            config,
            env,
            keys=("awsBucketVersioning", "awsBucketNoncurrentDays", "awsBucketExpireDays"),
            max_expire_days=36500,
        ),
    )


def _vpc_cidr(config: ConfigReader) -> str:
    key = config.qualified("awsVpcCidr")
    allowed = "a private IPv4 range from /16 to /24, such as 10.42.0.0/16"
    value = config.get("awsVpcCidr", "10.42.0.0/16")
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError as error:
        raise SettingError(key, value, allowed) from error
    if not (network.is_private and 16 <= network.prefixlen <= 24):
        raise SettingError(key, value, allowed)
    return str(network)


def _ssh_access(config: ConfigReader, common: CommonSettings) -> str:
    """cidrs when SSH CIDRs are listed, session-manager (no port 22 at all) otherwise."""
    default = "cidrs" if common.ssh_allowed_cidrs else "session-manager"
    access = config.get_choice("awsSshAccess", SSH_ACCESS, default)
    if common.is_group and access != "session-manager":
        raise SettingError(
            config.qualified("awsSshAccess"),
            access,
            "session-manager with topology group: the instances have no public address "
            "and no port 22 open",
        )
    if access == "cidrs" and not common.ssh_allowed_cidrs:
        raise SettingError(
            config.qualified("sshAllowedCidrs"),
            [],
            "a non-empty list of CIDRs when awsSshAccess is cidrs",
        )
    if access == "session-manager" and common.ssh_allowed_cidrs:
        raise SettingError(
            config.qualified("sshAllowedCidrs"),
            common.ssh_allowed_cidrs,
            "an empty list when awsSshAccess is session-manager (no SSH port is opened)",
        )
    return access


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _overlaps(backup: str, maintenance: str) -> bool:
    """Whether the daily backup window meets the weekly maintenance window on any day.

    Compared by time of day only, which is stricter than RDS (it compares on the
    maintenance day) and so never lets through a pair that RDS would refuse.
    """
    b_start, b_end = (_minutes(part) for part in backup.split("-"))
    m_start, m_end = (_minutes(part.split(":", 1)[1]) for part in maintenance.split("-"))

    def spans(start: int, end: int) -> list[tuple[int, int]]:
        return [(start, end)] if start < end else [(start, 1440), (0, end)]

    return any(
        s1 < e2 and s2 < e1 for s1, e1 in spans(b_start, b_end) for s2, e2 in spans(m_start, m_end)
    )
