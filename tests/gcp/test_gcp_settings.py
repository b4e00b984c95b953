"""GCP settings: per-environment defaults, and every bad value refused before any
resource is registered, with a message naming the key, the value and what is allowed."""

from __future__ import annotations

import pulumi
import pytest
from gcp_harness import RecordingMocks, run_program, stack_config

from stacks.config import ConfigReader, SettingError, read_common
from stacks.gcp.settings import IAP_TCP_FORWARDING_CIDR, read_gcp
from stacks.naming import digest, service_account_id

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


def settings_for(environment: str, **overrides):
    pulumi.runtime.set_all_config(stack_config(environment, **overrides), [])
    common = read_common(ConfigReader(), f"gcp-{environment}")
    return read_gcp(common, ConfigReader(), ConfigReader("gcp"))


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (
            "dev",
            dict(
                machine_type="e2-small",
                db_tier="db-g1-small",
                db_availability="ZONAL",
                db_backups=True,
                db_point_in_time_recovery=False,
                deletion_protection=True,
                bucket_versioning=True,
                bucket_force_destroy=False,
                bucket_expire_days=0,
            ),
        ),
        (
            "test",
            dict(
                machine_type="e2-small",
                db_tier="db-g1-small",
                db_availability="ZONAL",
                db_backups=False,
                db_point_in_time_recovery=False,
                deletion_protection=False,
                bucket_versioning=False,
                bucket_force_destroy=True,
                bucket_expire_days=7,
            ),
        ),
        (
            "prod",
            dict(
                machine_type="e2-standard-2",
                db_tier="db-custom-2-7680",
                db_availability="REGIONAL",
                db_backups=True,
                db_point_in_time_recovery=True,
                deletion_protection=True,
                bucket_versioning=True,
                bucket_force_destroy=False,
                bucket_expire_days=0,
            ),
        ),
    ],
)
def test_environment_picks_defaults(environment, expected):
    settings = settings_for(environment)
    assert {key: getattr(settings, key) for key in expected} == expected
    assert settings.ssh_source_cidrs == [IAP_TCP_FORWARDING_CIDR]
    assert settings.bucket_location == "EUROPE-WEST1"
    assert settings.db_version == "POSTGRES_16"


def test_explicit_values_override_environment_defaults():
    settings = settings_for(
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
    assert (settings.db_tier, settings.db_edition) == ("db-perf-optimized-N-4", "ENTERPRISE_PLUS")
    assert settings.db_availability == "REGIONAL"
    assert settings.db_version == "POSTGRES_17"
    assert (settings.db_maintenance_day, settings.db_maintenance_hour) == (2, 23)
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
def test_service_account_id_is_valid_for_any_stack_name(stack, expected):
    account_id = service_account_id(stack)
    assert account_id == expected
    assert 6 <= len(account_id) <= 30


BAD_VALUES = [
    # (environment, overrides, key, value shown, words of the allowed text)
    ("dev", {"gcp:project": "My_Project"}, "gcp:project", "My_Project", "GCP project ID"),
    ("dev", {"gcp:project": None}, "gcp:project", "None", "GCP project ID"),
    ("dev", {"gcp:region": "europe_west1"}, "gcp:region", "europe_west1", "europe-west1"),
    ("dev", {"gcp:region": "EU"}, "gcp:region", "EU", "GCP region"),
    (
        "dev",
        {"gcp:zone": "us-central1-a"},
        "gcp:zone",
        "us-central1-a",
        "zone of region europe-west1",
    ),
    (
        "dev",
        {"httpsAllowedCidrs": ["10.0.0.300/24"]},
        "mlflow-server:httpsAllowedCidrs",
        "10.0.0.300/24",
        "CIDR",
    ),
    (
        "dev",
        {"httpsAllowedCidrs": ["203.0.113.7/24"]},
        "mlflow-server:httpsAllowedCidrs",
        "203.0.113.7/24",
        "CIDR",
    ),
    ("dev", {"httpsAllowedCidrs": None}, "mlflow-server:httpsAllowedCidrs", "[]", "non-empty list"),
    (
        "dev",
        {"sshAllowedCidrs": ["not-a-cidr"]},
        "mlflow-server:sshAllowedCidrs",
        "not-a-cidr",
        "CIDR",
    ),
    (
        "dev",
        {"sshPublicKeys": None},
        "mlflow-server:sshPublicKeys",
        "[]",
        "at least one OpenSSH public key",
    ),
    ("dev", {"gcpMachineType": "big"}, "mlflow-server:gcpMachineType", "big", "e2-small"),
    ("dev", {"gcpBootDiskGb": "5"}, "mlflow-server:gcpBootDiskGb", "5", "from 10 to 2000"),
    (
        "dev",
        {"gcpSubnetCidr": "8.8.8.0/24"},
        "mlflow-server:gcpSubnetCidr",
        "8.8.8.0/24",
        "private IPv4",
    ),
    (
        "dev",
        {"gcpDbTier": "db-n1-standard-1"},
        "mlflow-server:gcpDbTier",
        "db-n1-standard-1",
        "db-custom-",
    ),
    (
        "dev",
        {"gcpDbTier": "db-custom-3-7680"},
        "mlflow-server:gcpDbTier",
        "db-custom-3-7680",
        "even 2-96",
    ),
    (
        "prod",
        {"gcpDbTier": "db-g1-small"},
        "mlflow-server:gcpDbTier",
        "db-g1-small",
        "dedicated-core",
    ),
    ("dev", {"gcpDbVersion": "12"}, "mlflow-server:gcpDbVersion", "12", "from 14 to 18"),
    (
        "dev",
        {"gcpDbAvailability": "multi"},
        "mlflow-server:gcpDbAvailability",
        "multi",
        "zonal, regional",
    ),
    (
        "prod",
        {"gcpDbBackups": "false"},
        "mlflow-server:gcpDbBackups",
        "False",
        "true in a prod stack",
    ),
    (
        "test",
        {"gcpDbPointInTimeRecovery": "true"},
        "mlflow-server:gcpDbPointInTimeRecovery",
        "True",
        "together with gcpDbBackups",
    ),
    (
        "prod",
        {"gcpDbBackupRetention": "1"},
        "mlflow-server:gcpDbBackupRetention",
        "1",
        "at least 2 with point-in-time recovery",
    ),
    (
        "dev",
        {"gcpDbBackupStartTime": "25:00"},
        "mlflow-server:gcpDbBackupStartTime",
        "25:00",
        "HH:MM",
    ),
    (
        "dev",
        {"gcpDbMaintenanceWindow": "sunday"},
        "mlflow-server:gcpDbMaintenanceWindow",
        "sunday",
        "ddd:hh",
    ),
    (
        "test",
        {"gcpDeletionProtection": "true"},
        "mlflow-server:gcpDeletionProtection",
        "True",
        "false in a test",
    ),
    (
        "dev",
        {"gcpBucketLocation": "MARS"},
        "mlflow-server:gcpBucketLocation",
        "MARS",
        "multi-region",
    ),
    (
        "dev",
        {"gcpBucketVersioning": "yes"},
        "mlflow-server:gcpBucketVersioning",
        "yes",
        "true or false",
    ),
    ("test", {"expiresAt": None}, "mlflow-server:expiresAt", "None", "test stacks must expire"),
]


@pytest.mark.parametrize(
    ("environment", "overrides", "key", "value", "allowed"),
    BAD_VALUES,
    ids=[f"{case[0]}-{case[2]}={case[3]}" for case in BAD_VALUES],
)
def test_bad_value_fails_before_any_resource(environment, overrides, key, value, allowed):
    mocks = RecordingMocks()
    with pytest.raises(SettingError) as failure:
        run_program(stack_config(environment, **overrides), f"gcp-{environment}", mocks)
    error = failure.value
    assert error.key == key
    message = str(error)
    assert key in message
    assert value in message
    assert allowed in message
    assert mocks.registered == []


def test_transaction_logs_are_kept_fewer_days_than_backups():
    assert settings_for("prod").db_log_retention_days == 7
    short = settings_for("dev", gcpDbPointInTimeRecovery="true", gcpDbBackupRetention="3")
    assert short.db_log_retention_days == 2
    assert settings_for("dev").db_log_retention_days == 0
