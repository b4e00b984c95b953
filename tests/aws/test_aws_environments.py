"""What prod, test and dev stacks do differently, each difference asserted."""

from __future__ import annotations

import json

import pytest
import yaml
from aws_harness import RANDOM_HEX, TEST_EXPIRY, config, run_stack

from stacks import contract

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


@pytest.fixture(scope="module")
def prod():
    return run_stack(config("prod"), stack="aws-prod")


@pytest.fixture(scope="module")
def test_stack():
    return run_stack(config("test"), stack="ci-1234")


def rds(run):
    return run.mocks.one("aws:rds/instance:Instance").inputs


def test_prod_database_is_protected_snapshotted_multi_az_and_backed_up(prod):
    db = rds(prod)
    assert db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is False
    assert db["finalSnapshotIdentifier"] == f"mlflow-aws-prod-final-{RANDOM_HEX}"
    assert db["multiAz"] is True
    assert db["backupRetentionPeriod"] == 7
    assert db["deleteAutomatedBackups"] is False
    assert db["instanceClass"] == "db.t4g.small"


def test_test_database_goes_away_in_one_destroy(test_stack):
    db = rds(test_stack)
    assert db["deletionProtection"] is False
    assert db["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in db
    assert db["multiAz"] is False
    assert db["backupRetentionPeriod"] == 0


def test_test_bucket_is_force_destroyed_and_prod_bucket_is_not(prod, test_stack):
    assert test_stack.mocks.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True
    assert prod.mocks.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is False


def test_vm_termination_protection_follows_the_environment(prod, test_stack):
    assert prod.mocks.one("aws:ec2/instance:Instance").inputs["disableApiTermination"] is True
    assert (
        test_stack.mocks.one("aws:ec2/instance:Instance").inputs["disableApiTermination"] is False
    )


def test_test_stack_carries_its_expiry_on_every_tag(test_stack):
    provider_tags = test_stack.mocks.provider_tags()
    assert provider_tags[contract.LABEL_EXPIRES] == TEST_EXPIRY
    assert provider_tags[contract.LABEL_ENVIRONMENT] == "test"
    bucket_tags = test_stack.mocks.one("aws:s3/bucket:Bucket").inputs["tags"]
    assert bucket_tags[contract.LABEL_EXPIRES] == TEST_EXPIRY


def test_prod_has_no_expiry_tag(prod):
    provider_tags = prod.mocks.provider_tags()
    assert contract.LABEL_EXPIRES not in provider_tags


def test_dev_defaults_protect_but_skip_the_snapshot():
    db = rds(run_stack(config()))
    assert db["deletionProtection"] is True
    assert db["skipFinalSnapshot"] is True
    assert db["backupRetentionPeriod"] == 1


def test_prod_may_drop_multi_az_explicitly():
    db = rds(run_stack(config("prod", awsDbMultiAz="false"), stack="aws-prod"))
    assert db["multiAz"] is False


def test_session_manager_opens_no_ssh_port_and_grants_ssm():
    run = run_stack(config(sshAllowedCidrs=None))
    ports = {
        r.inputs["fromPort"]
        for r in run.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    }
    assert 22 not in ports
    attachment = run.mocks.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    # Debian's images ship no SSM agent: cloud-init installs it from the region's bucket.
    commands = yaml.safe_load(run.mocks.one("aws:ec2/instance:Instance").inputs["userData"])[
        "runcmd"
    ]
    assert any(
        "https://s3.eu-central-1.amazonaws.com/amazon-ssm-eu-central-1/" in c for c in commands
    )
    assert "systemctl enable --now amazon-ssm-agent" in commands


def test_ssh_by_cidr_installs_no_ssm_agent():
    user_data = run_stack(config()).mocks.one("aws:ec2/instance:Instance").inputs["userData"]
    assert "runcmd" not in yaml.safe_load(user_data)


def test_letsencrypt_opens_port_80_to_the_world_and_nothing_else():
    run = run_stack(
        config(tlsMode="letsencrypt", domain="mlflow.example.com", acmeEmail="ops@example.com")
    )
    rules = run.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    http = [r.inputs for r in rules if r.inputs["fromPort"] == 80]
    # Let's Encrypt validates from unpublished addresses: port 80 must be open to all.
    assert [(r["cidrIpv4"], r["toPort"], r["ipProtocol"]) for r in http] == [
        ("0.0.0.0/0", 80, "tcp")
    ]
    assert run.outputs[contract.HOST] == "mlflow.example.com"
    assert run.outputs[contract.TRACKING_URL] == "https://mlflow.example.com"


def test_self_signed_opens_no_port_80():
    rules = run_stack(config()).mocks.of_type(
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
    )
    assert all(r.inputs["fromPort"] != 80 for r in rules)


def test_user_data_creates_the_login_user_with_every_key():
    keys = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZpcnN0IGtleS4uLi4uLi4uLi4uLi4uLi4uLi4uLi4u a@example",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNlY29uZCBrZXkuLi4uLi4uLi4uLi4uLi4uLi4uLi4u b@example",
    ]
    run = run_stack(config(sshUser="ops", sshPublicKeys=json.dumps(keys)))
    user_data = run.mocks.one("aws:ec2/instance:Instance").inputs["userData"]
    assert user_data.startswith("#cloud-config\n")
    document = yaml.safe_load(user_data)
    (user,) = [u for u in document["users"] if isinstance(u, dict)]
    assert user["name"] == "ops" and user["ssh_authorized_keys"] == keys
    assert run.mocks.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"] == keys[0]
    assert run.outputs[contract.SSH_USER] == "ops"


def test_bucket_lifecycle_follows_the_settings():
    run = run_stack(config(awsBucketVersioning="false", awsBucketExpireDays="90"))
    versioning = run.mocks.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Suspended"
    rules = run.mocks.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    by_id = {r["id"]: r for r in rules.inputs["rules"]}
    assert by_id["expire-artifacts"]["expiration"]["days"] == 90
    assert by_id["expire-noncurrent-versions"]["status"] == "Disabled"
