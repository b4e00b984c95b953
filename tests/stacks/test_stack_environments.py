"""What prod, test and dev stacks do differently on each cloud, every difference pinned.

``PINS`` holds the differences that are one input of one resource: the scenario, the
resource type, the input's path (wire names, dots between levels) and the exact value,
or ``ABSENT`` for an input that must not be set. The functions below it check what
takes more than one value.
"""

from __future__ import annotations

import functools

import pytest
import stack_harness
import yaml
from stack_harness import EXPIRES_AT, RANDOM_HEX, config, revealed

from stacks import contract

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
ABSENT = "<absent>"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
GCS = "gcp:storage/bucket:Bucket"
GCE = "gcp:compute/instance:Instance"
PEERING = "gcp:servicenetworking/connection:Connection"
RDS = "aws:rds/instance:Instance"
S3 = "aws:s3/bucket:Bucket"
EC2 = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
TEAM = {"labels": {"team": "ml-platform"}}
LETSENCRYPT = {
    "tlsMode": "letsencrypt",
    "domain": "mlflow.example.com",
    "acmeEmail": "ops@example.com",
}

#: name -> (cloud, environment, overrides, stack name or None for <cloud>-<environment>)
SCENARIOS = {
    "gcp-dev": ("gcp", "dev", {}, None),
    "gcp-test": ("gcp", "test", {}, None),
    "gcp-prod": ("gcp", "prod", {}, None),
    "gcp-dev-unprotected": ("gcp", "dev", {"gcpDeletionProtection": "false"}, None),
    "aws-dev": ("aws", "dev", TEAM, None),
    "aws-test": ("aws", "test", TEAM, "ci-1234"),
    "aws-prod": ("aws", "prod", TEAM, None),
    "aws-prod-single-az": ("aws", "prod", {**TEAM, "awsDbMultiAz": "false"}, None),
}


@functools.cache
def scenario(name: str) -> stack_harness.StackRun:
    cloud, environment, overrides, stack = SCENARIOS[name]
    return stack_harness.run(config(cloud, environment, **overrides), stack=stack)


PINS = [
    # GCP prod: protected, regional, point-in-time recovery, nothing thrown away.
    ("gcp-prod", SQL, "deletionProtection", True),
    ("gcp-prod", SQL, "settings.deletionProtectionEnabled", True),
    ("gcp-prod", SQL, "settings.availabilityType", "REGIONAL"),
    ("gcp-prod", SQL, "settings.backupConfiguration.enabled", True),
    ("gcp-prod", SQL, "settings.backupConfiguration.pointInTimeRecoveryEnabled", True),
    ("gcp-prod", SQL, "settings.backupConfiguration.transactionLogRetentionDays", 7),
    ("gcp-prod", SQL, "settings.retainBackupsOnDelete", True),
    ("gcp-prod", SQL, "settings.maintenanceWindow.updateTrack", "stable"),
    ("gcp-prod", GCE, "deletionProtection", True),
    ("gcp-prod", GCS, "forceDestroy", False),
    ("gcp-prod", GCS, "versioning", {"enabled": True}),
    ("gcp-prod", GCS, "softDeletePolicy", ABSENT),
    ("gcp-prod", PEERING, "deletionPolicy", ABSENT),
    # GCP test: goes in one destroy; small, zonal, no backups; expires.
    ("gcp-test", SQL, "deletionProtection", False),
    ("gcp-test", SQL, "settings.deletionProtectionEnabled", False),
    ("gcp-test", SQL, "settings.retainBackupsOnDelete", False),
    ("gcp-test", SQL, "settings.availabilityType", "ZONAL"),
    ("gcp-test", SQL, "settings.backupConfiguration.enabled", False),
    ("gcp-test", SQL, "settings.backupConfiguration.pointInTimeRecoveryEnabled", False),
    ("gcp-test", GCE, "deletionProtection", False),
    ("gcp-test", GCS, "forceDestroy", True),
    ("gcp-test", GCS, "softDeletePolicy", {"retentionDurationSeconds": 0}),
    ("gcp-test", GCS, "versioning", {"enabled": False}),
    ("gcp-test", PEERING, "deletionPolicy", "REMOVE_PEERING"),
    ("gcp-test", "gcp:sql/database:Database", "deletionPolicy", "ABANDON"),
    ("gcp-test", "gcp:sql/user:User", "deletionPolicy", "ABANDON"),
    ("gcp-test", GCE, "labels.mlflow-kit-expires", EXPIRES_AT),
    ("gcp-test", GCS, "labels.mlflow-kit-expires", EXPIRES_AT),
    # GCP dev: protected but zonal, without point-in-time recovery.
    ("gcp-dev", SQL, "deletionProtection", True),
    ("gcp-dev", SQL, "settings.availabilityType", "ZONAL"),
    ("gcp-dev", SQL, "settings.backupConfiguration.enabled", True),
    ("gcp-dev", SQL, "settings.backupConfiguration.pointInTimeRecoveryEnabled", False),
    ("gcp-dev", GCS, "forceDestroy", False),
    # Without protection the peering goes too; only test stacks throw artifacts away.
    ("gcp-dev-unprotected", SQL, "deletionProtection", False),
    ("gcp-dev-unprotected", PEERING, "deletionPolicy", "REMOVE_PEERING"),
    ("gcp-dev-unprotected", GCS, "forceDestroy", False),
    # AWS prod: protected, snapshotted, Multi-AZ, backed up.
    ("aws-prod", RDS, "deletionProtection", True),
    ("aws-prod", RDS, "skipFinalSnapshot", False),
    ("aws-prod", RDS, "finalSnapshotIdentifier", f"mlflow-aws-prod-final-{RANDOM_HEX}"),
    ("aws-prod", RDS, "multiAz", True),
    ("aws-prod", RDS, "backupRetentionPeriod", 7),
    ("aws-prod", RDS, "deleteAutomatedBackups", False),
    ("aws-prod", RDS, "instanceClass", "db.t4g.small"),
    ("aws-prod", S3, "forceDestroy", False),
    ("aws-prod", EC2, "disableApiTermination", True),
    ("aws-prod-single-az", RDS, "multiAz", False),
    # AWS test: goes away in one destroy, expires.
    ("aws-test", RDS, "deletionProtection", False),
    ("aws-test", RDS, "skipFinalSnapshot", True),
    ("aws-test", RDS, "finalSnapshotIdentifier", ABSENT),
    ("aws-test", RDS, "multiAz", False),
    ("aws-test", RDS, "backupRetentionPeriod", 0),
    ("aws-test", S3, "forceDestroy", True),
    ("aws-test", EC2, "disableApiTermination", False),
    ("aws-test", S3, f"tags.{contract.LABEL_EXPIRES}", EXPIRES_AT),
    # AWS dev: protected, but no final snapshot.
    ("aws-dev", RDS, "deletionProtection", True),
    ("aws-dev", RDS, "skipFinalSnapshot", True),
    ("aws-dev", RDS, "backupRetentionPeriod", 1),
]


def at(inputs: dict, path: str):
    value = inputs
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


@pytest.mark.parametrize(
    ("name", "typ", "path", "expected"),
    PINS,
    ids=[f"{p[0]}-{p[1].split(':')[-1]}.{p[2]}" for p in PINS],
)
def test_environment_pins(name, typ, path, expected):
    value = at(scenario(name).one(typ).inputs, path)
    assert value == expected
    # True is not 1 (numbers reach the mocks as floats, so only booleans are told apart).
    assert isinstance(value, bool) is isinstance(expected, bool)


# --- GCP -----------------------------------------------------------------------------------


def test_gcp_prod_database_is_dedicated_core_and_logs_no_statements():
    settings = scenario("gcp-prod").one(SQL).inputs["settings"]
    assert settings["tier"] not in ("db-f1-micro", "db-g1-small")
    flags = {f["name"]: f["value"] for f in settings["databaseFlags"]}
    assert flags["log_min_duration_statement"] == "-1"


def test_gcp_prod_logs_firewall_hits():
    rules = scenario("gcp-prod").of_type("gcp:compute/firewall:Firewall")
    assert rules and all(
        r.inputs["logConfig"] == {"metadata": "EXCLUDE_ALL_METADATA"} for r in rules
    )


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_gcp_bucket_lifecycle_follows_versioning_and_expiry(environment):
    lifecycle = scenario(f"gcp-{environment}").one(GCS).inputs["lifecycleRules"]
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


# --- AWS -----------------------------------------------------------------------------------


def test_aws_test_stack_carries_its_expiry_on_every_tag_and_prod_none():
    provider_tags = scenario("aws-test").provider_tags()
    assert provider_tags[contract.LABEL_EXPIRES] == EXPIRES_AT
    assert provider_tags[contract.LABEL_ENVIRONMENT] == "test"
    assert contract.LABEL_EXPIRES not in scenario("aws-prod").provider_tags()


def aws(**overrides) -> stack_harness.StackRun:
    return stack_harness.run(config("aws", **{**TEAM, **overrides}))


def test_aws_session_manager_opens_no_ssh_port_and_grants_ssm():
    run = aws(sshAllowedCidrs=None)
    assert 22 not in {r.inputs["fromPort"] for r in run.of_type(INGRESS)}
    attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    # Debian's images ship no SSM agent: cloud-init installs it from the region's bucket.
    commands = yaml.safe_load(revealed(run.one(EC2).inputs["userData"]))["runcmd"]
    assert any(
        "https://s3.eu-central-1.amazonaws.com/amazon-ssm-eu-central-1/" in c for c in commands
    )
    assert "systemctl enable --now amazon-ssm-agent" in commands


def test_aws_ssh_by_cidr_installs_no_ssm_agent_and_self_signed_opens_no_port_80():
    run = scenario("aws-dev")
    assert "runcmd" not in yaml.safe_load(revealed(run.one(EC2).inputs["userData"]))
    assert all(r.inputs["fromPort"] != 80 for r in run.of_type(INGRESS))


def test_aws_letsencrypt_opens_port_80_to_the_world_and_nothing_else():
    run = aws(**LETSENCRYPT)
    http = [r.inputs for r in run.of_type(INGRESS) if r.inputs["fromPort"] == 80]
    # Let's Encrypt validates from unpublished addresses: port 80 must be open to all.
    assert [(r["cidrIpv4"], r["toPort"], r["ipProtocol"]) for r in http] == [
        ("0.0.0.0/0", 80, "tcp")
    ]
    assert run.outputs[contract.HOST] == "mlflow.example.com"
    assert run.outputs[contract.TRACKING_URL] == "https://mlflow.example.com"


def test_aws_user_data_creates_the_login_user_with_every_key():
    keys = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZpcnN0IGtleS4uLi4uLi4uLi4uLi4uLi4uLi4uLi4u a@example",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNlY29uZCBrZXkuLi4uLi4uLi4uLi4uLi4uLi4uLi4u b@example",
    ]
    run = aws(sshUser="ops", sshPublicKeys=keys)
    user_data = revealed(run.one(EC2).inputs["userData"])
    assert user_data.startswith("#cloud-config\n")
    document = yaml.safe_load(user_data)
    (user,) = [u for u in document["users"] if isinstance(u, dict)]
    assert user["name"] == "ops" and user["ssh_authorized_keys"] == keys
    assert run.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"] == keys[0]
    assert run.outputs[contract.SSH_USER] == "ops"


def test_aws_bucket_lifecycle_follows_the_settings():
    run = aws(awsBucketVersioning="false", awsBucketExpireDays="90")
    versioning = run.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Suspended"
    rules = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    by_id = {r["id"]: r for r in rules.inputs["rules"]}
    assert by_id["expire-artifacts"]["expiration"]["days"] == 90
    assert by_id["expire-noncurrent-versions"]["status"] == "Disabled"
