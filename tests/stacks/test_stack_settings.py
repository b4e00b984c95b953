"""Stack settings, both clouds: every bad value refused before any resource is registered,
with a message naming the key, the value and what is allowed; per-environment defaults."""

from __future__ import annotations

import pulumi
import pytest
import stack_harness
from stack_harness import RecordingMocks, config

from stacks.config import ConfigReader, SettingError, read_common
from stacks.gcp.settings import IAP_TCP_FORWARDING_CIDR, read_gcp
from stacks.naming import digest, service_account_id

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
P = "mlflow-server:"
TEAM = {"labels": {"team": "ml-platform"}}

# (cloud, environment, overrides, key in the error, the value it names, words of "allowed")
REFUSED = [
    ("gcp", "dev", {"gcp:project": "My_Project"}, "gcp:project", "My_Project", "GCP project ID"),
    ("gcp", "dev", {"gcp:project": None}, "gcp:project", None, "GCP project ID"),
    ("gcp", "dev", {"gcp:region": "europe_west1"}, "gcp:region", "europe_west1", "europe-west1"),
    ("gcp", "dev", {"gcp:region": "EU"}, "gcp:region", "EU", "GCP region"),
    (
        "gcp",
        "dev",
        {"gcp:zone": "us-central1-a"},
        "gcp:zone",
        "us-central1-a",
        "zone of region europe-west1",
    ),
    (
        "gcp",
        "dev",
        {"httpsAllowedCidrs": ["10.0.0.300/24"]},
        P + "httpsAllowedCidrs",
        "10.0.0.300/24",
        "CIDR",
    ),
    (
        "gcp",
        "dev",
        {"httpsAllowedCidrs": ["203.0.113.7/24"]},
        P + "httpsAllowedCidrs",
        "203.0.113.7/24",
        "CIDR",
    ),
    ("gcp", "dev", {"httpsAllowedCidrs": None}, P + "httpsAllowedCidrs", [], "non-empty list"),
    (
        "gcp",
        "dev",
        {"sshAllowedCidrs": ["not-a-cidr"]},
        P + "sshAllowedCidrs",
        "not-a-cidr",
        "CIDR",
    ),
    (
        "gcp",
        "dev",
        {"sshPublicKeys": None},
        P + "sshPublicKeys",
        [],
        "at least one OpenSSH public key",
    ),
    ("gcp", "dev", {"gcpMachineType": "big"}, P + "gcpMachineType", "big", "e2-small"),
    ("gcp", "dev", {"gcpBootDiskGb": "5"}, P + "gcpBootDiskGb", "5", "from 10 to 2000"),
    (
        "gcp",
        "dev",
        {"gcpSubnetCidr": "8.8.8.0/24"},
        P + "gcpSubnetCidr",
        "8.8.8.0/24",
        "private IPv4",
    ),
    (
        "gcp",
        "dev",
        {"gcpDbTier": "db-n1-standard-1"},
        P + "gcpDbTier",
        "db-n1-standard-1",
        "db-custom-",
    ),
    (
        "gcp",
        "dev",
        {"gcpDbTier": "db-custom-3-7680"},
        P + "gcpDbTier",
        "db-custom-3-7680",
        "even 2-96",
    ),
    ("gcp", "prod", {"gcpDbTier": "db-g1-small"}, P + "gcpDbTier", "db-g1-small", "dedicated-core"),
    ("gcp", "dev", {"gcpDbVersion": "12"}, P + "gcpDbVersion", "12", "from 14 to 18"),
    (
        "gcp",
        "dev",
        {"gcpDbAvailability": "multi"},
        P + "gcpDbAvailability",
        "multi",
        "zonal, regional",
    ),
    ("gcp", "prod", {"gcpDbBackups": "false"}, P + "gcpDbBackups", False, "true in a prod stack"),
    (
        "gcp",
        "test",
        {"gcpDbPointInTimeRecovery": "true"},
        P + "gcpDbPointInTimeRecovery",
        True,
        "together with gcpDbBackups",
    ),
    (
        "gcp",
        "prod",
        {"gcpDbBackupRetention": "1"},
        P + "gcpDbBackupRetention",
        1,
        "at least 2 with point-in-time recovery",
    ),
    ("gcp", "dev", {"gcpDbBackupStartTime": "25:00"}, P + "gcpDbBackupStartTime", "25:00", "HH:MM"),
    (
        "gcp",
        "dev",
        {"gcpDbMaintenanceWindow": "sunday"},
        P + "gcpDbMaintenanceWindow",
        "sunday",
        "ddd:hh",
    ),
    (
        "gcp",
        "test",
        {"gcpDeletionProtection": "true"},
        P + "gcpDeletionProtection",
        True,
        "false in a test",
    ),
    ("gcp", "dev", {"gcpBucketLocation": "MARS"}, P + "gcpBucketLocation", "MARS", "multi-region"),
    (
        "gcp",
        "dev",
        {"gcpBucketVersioning": "yes"},
        P + "gcpBucketVersioning",
        "yes",
        "true or false",
    ),
    ("gcp", "test", {"expiresAt": None}, P + "expiresAt", None, "test stacks must expire"),
    ("aws", "dev", {"aws:region": None}, "aws:region", None, "AWS region"),
    ("aws", "dev", {"aws:region": "Frankfurt"}, "aws:region", "Frankfurt", "AWS region"),
    (
        "aws",
        "dev",
        {"awsInstanceType": "t4g.medium"},
        P + "awsInstanceType",
        "t4g.medium",
        "x86_64",
    ),
    ("aws", "dev", {"awsInstanceType": "large"}, P + "awsInstanceType", "large", "instance type"),
    ("aws", "dev", {"awsRootVolumeGb": "5"}, P + "awsRootVolumeGb", "5", "10 to 2048"),
    (
        "aws",
        "dev",
        {"awsDbInstanceClass": "t3.micro"},
        P + "awsDbInstanceClass",
        "t3.micro",
        "db.t4g",
    ),
    ("aws", "dev", {"awsDbStorageGb": "ten"}, P + "awsDbStorageGb", "ten", "whole number"),
    ("aws", "dev", {"awsPostgresVersion": "12"}, P + "awsPostgresVersion", "12", "14, 15, 16, 17"),
    ("aws", "dev", {"awsDbMultiAz": "yes"}, P + "awsDbMultiAz", "yes", "true or false"),
    ("aws", "prod", {"awsDbBackupRetentionDays": "0"}, P + "awsDbBackupRetentionDays", "0", "prod"),
    (
        "aws",
        "dev",
        {"awsDbBackupRetentionDays": "40"},
        P + "awsDbBackupRetentionDays",
        "40",
        "0 to 35",
    ),
    ("aws", "dev", {"awsDbBackupWindow": "1-2"}, P + "awsDbBackupWindow", "1-2", "hh:mm-hh:mm"),
    (
        "aws",
        "dev",
        {"awsDbMaintenanceWindow": "sunday 3am"},
        P + "awsDbMaintenanceWindow",
        "sunday 3am",
        "ddd:hh:mm",
    ),
    (
        "aws",
        "dev",
        {"awsDbMaintenanceWindow": "mon:01:15-mon:02:00"},
        P + "awsDbMaintenanceWindow",
        "mon:01:15-mon:02:00",
        "not overlapping",
    ),
    (
        "aws",
        "prod",
        {"awsDeletionProtection": "false"},
        P + "awsDeletionProtection",
        "false",
        "prod",
    ),
    ("aws", "test", {"awsDeletionProtection": "true"}, P + "awsDeletionProtection", "true", "test"),
    (
        "aws",
        "dev",
        {"awsSshAccess": "telnet"},
        P + "awsSshAccess",
        "telnet",
        "cidrs, session-manager",
    ),
    (
        "aws",
        "dev",
        {"awsSshAccess": "cidrs", "sshAllowedCidrs": None},
        P + "sshAllowedCidrs",
        [],
        "non-empty",
    ),
    (
        "aws",
        "dev",
        {"awsSshAccess": "session-manager"},
        P + "sshAllowedCidrs",
        ["198.51.100.7/32"],
        "empty list",
    ),
    ("aws", "dev", {"sshPublicKeys": None}, P + "sshPublicKeys", [], "public key"),
    ("aws", "dev", {"awsVpcCidr": "8.8.0.0/16"}, P + "awsVpcCidr", "8.8.0.0/16", "private"),
    ("aws", "dev", {"awsVpcCidr": "10.0.0.0/8"}, P + "awsVpcCidr", "10.0.0.0/8", "/16 to /24"),
    ("aws", "dev", {"awsVpcCidr": "10.42.0.1/16"}, P + "awsVpcCidr", "10.42.0.1/16", "private"),
    ("aws", "dev", {"awsBucketVersioning": "on"}, P + "awsBucketVersioning", "on", "true or false"),
    (
        "aws",
        "dev",
        {"awsBucketNoncurrentDays": "0"},
        P + "awsBucketNoncurrentDays",
        "0",
        "1 to 3650",
    ),
    ("aws", "dev", {"awsBucketExpireDays": "-1"}, P + "awsBucketExpireDays", "-1", "0 to 36500"),
    # Common keys, read by stacks/config.py, stop the AWS stack the same way.
    ("aws", "dev", {"httpsAllowedCidrs": None}, P + "httpsAllowedCidrs", [], "non-empty"),
    ("aws", "test", {"expiresAt": None}, P + "expiresAt", None, "must expire"),
    (
        "aws",
        "dev",
        {"sshAllowedCidrs": ["198.51.100.0/33"]},
        P + "sshAllowedCidrs",
        "198.51.100.0/33",
        "CIDR",
    ),
]


@pytest.mark.parametrize(
    ("cloud", "environment", "overrides", "key", "value", "allowed"),
    REFUSED,
    ids=[f"{c[0]}-{c[1]}-{c[3]}={c[4]}" for c in REFUSED],
)
def test_bad_value_fails_naming_key_value_and_allowed_before_any_resource(
    cloud, environment, overrides, key, value, allowed
):
    mocks = RecordingMocks()
    extra = TEAM if cloud == "aws" else {}
    with pytest.raises(SettingError) as failure:
        stack_harness.run(config(cloud, environment, **{**extra, **overrides}), mocks=mocks)
    error = failure.value
    assert (error.key, error.value) == (key, value)
    assert type(error.value) is type(value)
    assert allowed in error.allowed
    message = str(error)
    assert key in message
    assert repr(value) in message
    assert allowed in message
    assert mocks.registered == [], [r.name for r in mocks.registered]
    assert mocks.calls == []


def test_a_region_with_one_zone_fails_naming_the_region_setting():
    mocks = RecordingMocks(zones=["eu-central-1a"])
    with pytest.raises(Exception, match="needs 2: choose another aws:region"):
        stack_harness.run(config("aws", **TEAM), mocks=mocks)


def test_aws_ssh_access_defaults_follow_the_ssh_cidrs():
    with_cidrs = stack_harness.run(config("aws", **TEAM))
    without = stack_harness.run(config("aws", **TEAM, sshAllowedCidrs=None))
    attachment = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    assert not with_cidrs.of_type(attachment)
    assert without.of_type(attachment)


# --- GCP defaults ------------------------------------------------------------------------


def gcp_settings(environment: str, **overrides):
    pulumi.runtime.set_all_config(config("gcp", environment, **overrides), [])
    common = read_common(ConfigReader(), f"gcp-{environment}")
    return read_gcp(common, ConfigReader(), ConfigReader("gcp"))


def at(settings, path: str):
    for part in path.split("."):
        settings = getattr(settings, part)
    return settings


GCP_DEFAULTS = {
    "dev": {
        "machine_type": "e2-small",
        "database.tier": "db-g1-small",
        "database.availability": "ZONAL",
        "database.backups": True,
        "database.point_in_time_recovery": False,
        "deletion_protection": True,
        "artifacts.versioning": True,
        "artifacts.force_destroy": False,
        "artifacts.expire_days": 0,
    },
    "test": {
        "machine_type": "e2-small",
        "database.tier": "db-g1-small",
        "database.availability": "ZONAL",
        "database.backups": False,
        "database.point_in_time_recovery": False,
        "deletion_protection": False,
        "artifacts.versioning": False,
        "artifacts.force_destroy": True,
        "artifacts.expire_days": 7,
    },
    "prod": {
        "machine_type": "e2-standard-2",
        "database.tier": "db-custom-2-7680",
        "database.availability": "REGIONAL",
        "database.backups": True,
        "database.point_in_time_recovery": True,
        "deletion_protection": True,
        "artifacts.versioning": True,
        "artifacts.force_destroy": False,
        "artifacts.expire_days": 0,
    },
}


@pytest.mark.parametrize(("environment", "expected"), GCP_DEFAULTS.items())
def test_gcp_environment_picks_defaults(environment, expected):
    settings = gcp_settings(environment)
    assert {key: at(settings, key) for key in expected} == expected
    assert settings.ssh_source_cidrs == [IAP_TCP_FORWARDING_CIDR]
    assert settings.bucket_location == "EUROPE-WEST1"
    assert settings.database.version == "POSTGRES_16"


def test_gcp_explicit_values_override_environment_defaults():
    settings = gcp_settings(
        "dev",
        gcpMachineType="n2-standard-4",
        gcpDbTier="db-perf-optimized-N-4",
        gcpDbAvailability="regional",
        gcpDbVersion="17",
        gcpDbMaintenanceWindow="Tue:23",
        gcpBucketLocation="eu",
        sshAllowedCidrs=["198.51.100.7/32"],
    )
    assert settings.machine_type == "n2-standard-4"
    assert (settings.database.tier, settings.database.edition) == (
        "db-perf-optimized-N-4",
        "ENTERPRISE_PLUS",
    )
    assert settings.database.availability == "REGIONAL"
    assert settings.database.version == "POSTGRES_17"
    assert (settings.database.maintenance_day, settings.database.maintenance_hour) == (2, 23)
    assert settings.bucket_location == "EU"
    assert settings.ssh_source_cidrs == ["198.51.100.7/32"]


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ("gcp-dev", "mlflow-gcp-dev"),
        ("CI_1234", f"mlflow-ci-1234-{digest('CI_1234')}"),
        ("a" * 40, f"mlflow-{'a' * 12}-{digest('a' * 40)}"),
        ("..", f"mlflow-{digest('..')}"),
    ],
)
def test_gcp_service_account_id_is_valid_for_any_stack_name(stack, expected):
    account_id = service_account_id(stack)
    assert account_id == expected
    assert 6 <= len(account_id) <= 30


def test_gcp_transaction_logs_are_kept_fewer_days_than_backups():
    assert gcp_settings("prod").database.log_retention_days == 7
    short = gcp_settings("dev", gcpDbPointInTimeRecovery="true", gcpDbBackupRetention="3")
    assert short.database.log_retention_days == 2
    assert gcp_settings("dev").database.log_retention_days == 0
