"""Bad settings fail naming key, value and what is allowed, before any resource exists."""

from __future__ import annotations

import json

import pytest
from aws_harness import RecordingMocks, config, run_stack

from stacks.config import SettingError

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

P = "mlflow-server:"
# (environment, overrides, key in the error, value in the error, words of "allowed")
CASES = [
    ("dev", {"aws:region": None}, "aws:region", None, "AWS region"),
    ("dev", {"aws:region": "Frankfurt"}, "aws:region", "Frankfurt", "AWS region"),
    ("dev", {"awsInstanceType": "t4g.medium"}, P + "awsInstanceType", "t4g.medium", "x86_64"),
    ("dev", {"awsInstanceType": "large"}, P + "awsInstanceType", "large", "instance type"),
    ("dev", {"awsRootVolumeGb": "5"}, P + "awsRootVolumeGb", "5", "10 to 2048"),
    ("dev", {"awsDbInstanceClass": "t3.micro"}, P + "awsDbInstanceClass", "t3.micro", "db.t4g"),
    ("dev", {"awsDbStorageGb": "ten"}, P + "awsDbStorageGb", "ten", "whole number"),
    ("dev", {"awsPostgresVersion": "12"}, P + "awsPostgresVersion", "12", "14, 15, 16, 17"),
    ("dev", {"awsDbMultiAz": "yes"}, P + "awsDbMultiAz", "yes", "true or false"),
    ("prod", {"awsDbBackupRetentionDays": "0"}, P + "awsDbBackupRetentionDays", "0", "prod"),
    ("dev", {"awsDbBackupRetentionDays": "40"}, P + "awsDbBackupRetentionDays", "40", "0 to 35"),
    ("dev", {"awsDbBackupWindow": "1-2"}, P + "awsDbBackupWindow", "1-2", "hh:mm-hh:mm"),
    (
        "dev",
        {"awsDbMaintenanceWindow": "sunday 3am"},
        P + "awsDbMaintenanceWindow",
        "sunday 3am",
        "ddd:hh:mm",
    ),
    (
        "dev",
        {"awsDbMaintenanceWindow": "mon:01:15-mon:02:00"},
        P + "awsDbMaintenanceWindow",
        "mon:01:15-mon:02:00",
        "not overlapping",
    ),
    ("prod", {"awsDeletionProtection": "false"}, P + "awsDeletionProtection", "false", "prod"),
    ("test", {"awsDeletionProtection": "true"}, P + "awsDeletionProtection", "true", "test"),
    ("dev", {"awsSshAccess": "telnet"}, P + "awsSshAccess", "telnet", "cidrs, session-manager"),
    (
        "dev",
        {"awsSshAccess": "cidrs", "sshAllowedCidrs": None},
        P + "sshAllowedCidrs",
        [],
        "non-empty",
    ),
    (
        "dev",
        {"awsSshAccess": "session-manager"},
        P + "sshAllowedCidrs",
        ["198.51.100.7/32"],
        "empty list",
    ),
    ("dev", {"sshPublicKeys": None}, P + "sshPublicKeys", [], "public key"),
    ("dev", {"awsVpcCidr": "8.8.0.0/16"}, P + "awsVpcCidr", "8.8.0.0/16", "private"),
    ("dev", {"awsVpcCidr": "10.0.0.0/8"}, P + "awsVpcCidr", "10.0.0.0/8", "/16 to /24"),
    ("dev", {"awsVpcCidr": "10.42.0.1/16"}, P + "awsVpcCidr", "10.42.0.1/16", "private"),
    ("dev", {"awsBucketVersioning": "on"}, P + "awsBucketVersioning", "on", "true or false"),
    ("dev", {"awsBucketNoncurrentDays": "0"}, P + "awsBucketNoncurrentDays", "0", "1 to 3650"),
    ("dev", {"awsBucketExpireDays": "-1"}, P + "awsBucketExpireDays", "-1", "0 to 36500"),
    # Common keys, read by stacks/config.py, stop the AWS stack the same way.
    ("dev", {"httpsAllowedCidrs": None}, P + "httpsAllowedCidrs", [], "non-empty"),
    ("test", {"expiresAt": None}, P + "expiresAt", None, "must expire"),
    (
        "dev",
        {"sshAllowedCidrs": json.dumps(["198.51.100.0/33"])},
        P + "sshAllowedCidrs",
        "198.51.100.0/33",
        "CIDR",
    ),
]


@pytest.mark.parametrize(
    ("environment", "overrides", "key", "value", "allowed"),
    CASES,
    ids=[f"{c[0]}-{'-'.join(c[1])}-{c[3]}" for c in CASES],
)
def test_bad_setting_fails_with_key_value_and_allowed_and_registers_nothing(
    environment, overrides, key, value, allowed
):
    mocks = RecordingMocks()
    with pytest.raises(SettingError) as raised:
        run_stack(config(environment, **overrides), mocks=mocks)
    error = raised.value
    assert error.key == key
    if value is not None or key.endswith(("region", "expiresAt")):
        assert error.value == value
    assert allowed in error.allowed
    assert key in str(error) and allowed in str(error)
    assert mocks.resources == [], [r.name for r in mocks.resources]
    assert mocks.calls == []


def test_a_region_with_one_zone_fails_naming_the_region_setting():
    mocks = RecordingMocks(zones=["eu-central-1a"])
    with pytest.raises(Exception, match="needs 2: choose another aws:region"):
        run_stack(config(), mocks=mocks)


def test_ssh_access_defaults_follow_the_ssh_cidrs():
    with_cidrs = run_stack(config())
    without = run_stack(config(sshAllowedCidrs=None))
    attachment = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    assert not with_cidrs.mocks.of_type(attachment)
    assert without.mocks.of_type(attachment)
