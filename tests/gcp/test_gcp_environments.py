"""The environment class changes what a stack protects and what it lets go."""

from __future__ import annotations

import pytest
from gcp_harness import run_program, stack_config

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
BUCKET = "gcp:storage/bucket:Bucket"
INSTANCE = "gcp:compute/instance:Instance"
CONNECTION = "gcp:servicenetworking/connection:Connection"


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_config("prod"))


@pytest.fixture(scope="module")
def test_stack():
    return run_program(stack_config("test"))


@pytest.fixture(scope="module")
def dev():
    return run_program(stack_config("dev"))


def test_prod_database_is_protected_regional_with_pitr(prod):
    db = prod.one(SQL_INSTANCE).inputs
    assert db["deletionProtection"] is True
    settings = db["settings"]
    assert settings["deletionProtectionEnabled"] is True
    assert settings["availabilityType"] == "REGIONAL"
    assert settings["backupConfiguration"]["enabled"] is True
    assert settings["backupConfiguration"]["pointInTimeRecoveryEnabled"] is True
    assert settings["backupConfiguration"]["transactionLogRetentionDays"] == 7
    assert settings["retainBackupsOnDelete"] is True
    assert settings["tier"] not in ("db-f1-micro", "db-g1-small")
    assert settings["maintenanceWindow"]["updateTrack"] == "stable"
    flags = {f["name"]: f["value"] for f in settings["databaseFlags"]}
    assert flags["log_min_duration_statement"] == "-1"


def test_prod_keeps_vm_bucket_and_peering(prod):
    assert prod.one(INSTANCE).inputs["deletionProtection"] is True
    bucket = prod.one(BUCKET).inputs
    assert bucket["forceDestroy"] is False
    assert bucket["versioning"] == {"enabled": True}
    assert "softDeletePolicy" not in bucket
    assert "deletionPolicy" not in prod.one(CONNECTION).inputs


def test_prod_logs_firewall_hits(prod):
    rules = prod.of_type("gcp:compute/firewall:Firewall")
    assert rules and all(
        r.inputs["logConfig"] == {"metadata": "EXCLUDE_ALL_METADATA"} for r in rules
    )


def test_test_stack_goes_in_one_destroy(test_stack):
    db = test_stack.one(SQL_INSTANCE).inputs
    assert db["deletionProtection"] is False
    assert db["settings"]["deletionProtectionEnabled"] is False
    assert db["settings"]["retainBackupsOnDelete"] is False
    assert test_stack.one(INSTANCE).inputs["deletionProtection"] is False
    bucket = test_stack.one(BUCKET).inputs
    assert bucket["forceDestroy"] is True
    assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": 0}
    assert test_stack.one(CONNECTION).inputs["deletionPolicy"] == "REMOVE_PEERING"
    for typ in ("gcp:sql/database:Database", "gcp:sql/user:User"):
        assert test_stack.one(typ).inputs["deletionPolicy"] == "ABANDON"


def test_test_stack_is_small_zonal_and_without_backups(test_stack):
    settings = test_stack.one(SQL_INSTANCE).inputs["settings"]
    assert settings["availabilityType"] == "ZONAL"
    assert settings["backupConfiguration"]["enabled"] is False
    assert settings["backupConfiguration"]["pointInTimeRecoveryEnabled"] is False
    assert test_stack.one(BUCKET).inputs["versioning"] == {"enabled": False}


def test_test_stack_carries_its_expiry(test_stack):
    assert test_stack.one(INSTANCE).inputs["labels"]["mlflow-kit-expires"] == "203001011200"
    assert test_stack.one(BUCKET).inputs["labels"]["mlflow-kit-expires"] == "203001011200"


def test_dev_is_protected_but_zonal_without_pitr(dev):
    db = dev.one(SQL_INSTANCE).inputs
    assert db["deletionProtection"] is True
    assert db["settings"]["availabilityType"] == "ZONAL"
    assert db["settings"]["backupConfiguration"]["enabled"] is True
    assert db["settings"]["backupConfiguration"]["pointInTimeRecoveryEnabled"] is False
    assert dev.one(BUCKET).inputs["forceDestroy"] is False


def test_dev_without_protection_lets_the_peering_go():
    run = run_program(stack_config("dev", gcpDeletionProtection="false"))
    assert run.one(SQL_INSTANCE).inputs["deletionProtection"] is False
    assert run.one(CONNECTION).inputs["deletionPolicy"] == "REMOVE_PEERING"
    # Only test stacks throw artifacts away with the bucket.
    assert run.one(BUCKET).inputs["forceDestroy"] is False


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_bucket_lifecycle_follows_versioning_and_expiry(environment):
    lifecycle = run_program(stack_config(environment)).one(BUCKET).inputs["lifecycleRules"]
    actions = sorted(r["action"]["type"] for r in lifecycle)
    assert actions == ["AbortIncompleteMultipartUpload", "Delete"]
    (delete,) = [r for r in lifecycle if r["action"]["type"] == "Delete"]
    if environment == "test":
        assert delete["condition"] == {"age": 7, "withState": "ANY"}
    else:
        assert delete["condition"] == {
            "daysSinceNoncurrentTime": 90 if environment == "prod" else 30,
            "withState": "ARCHIVED",
        }
