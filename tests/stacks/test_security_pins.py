"""Security properties pinned to exact values, so a widened rule or role fails a test.

Each assertion names the literal the cloud receives (not a constant imported from the
program, which a wrong edit would change along with the program).
"""

from __future__ import annotations

import json

import pytest
import stack_harness
import yaml
from stack_harness import config, revealed

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"


@pytest.fixture(scope="module")
def aws_dev():
    return stack_harness.run(config("aws", "dev"))


@pytest.fixture(scope="module")
def gcp_dev():
    return stack_harness.run(config("gcp", "dev"))


def test_aws_vm_egress_is_exactly_tcp_80_443_out_and_postgres_to_the_database(aws_dev):
    rules = sorted(
        (
            r.name,
            r.inputs["ipProtocol"],
            r.inputs["fromPort"],
            r.inputs["toPort"],
            r.inputs.get("cidrIpv4") or r.inputs.get("referencedSecurityGroupId"),
        )
        for r in aws_dev.of_type(EGRESS)
    )
    assert rules == [
        ("security-vm-out-http", "tcp", 80, 80, "0.0.0.0/0"),
        ("security-vm-out-https", "tcp", 443, 443, "0.0.0.0/0"),
        ("security-vm-out-postgres", "tcp", 5432, 5432, "security-db-id"),
    ]


def test_gcp_bucket_grant_is_exactly_object_user_for_the_vm_account(gcp_dev):
    grant = gcp_dev.one("gcp:storage/bucketIAMMember:BucketIAMMember").inputs
    assert grant["role"] == "roles/storage.objectUser"
    assert grant["member"] == (
        f"serviceAccount:mlflow-gcp-dev@{stack_harness.GCP_PROJECT}.iam.gserviceaccount.com"
    )
    roles = sorted(r.inputs["role"] for r in gcp_dev.of_type("gcp:projects/iAMMember:IAMMember"))
    assert roles == [
        "roles/cloudsql.client",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
    ]


def test_gcp_account_signs_as_itself_only(gcp_dev):
    account = f"mlflow-gcp-dev@{stack_harness.GCP_PROJECT}.iam.gserviceaccount.com"
    (grant,) = gcp_dev.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert grant.inputs == {
        "serviceAccountId": f"projects/{stack_harness.GCP_PROJECT}/serviceAccounts/{account}",
        "role": "roles/iam.serviceAccountTokenCreator",
        "member": f"serviceAccount:{account}",
    }


def test_aws_role_policy_is_exactly_the_artifact_prefix(aws_dev):
    policy = json.loads(aws_dev.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    bucket = "arn:aws:s3:::artifacts-bucket-0a1b2c3"
    assert policy["Statement"] == [
        {
            "Sid": "ArtifactObjects",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
            ],
            "Resource": [f"{bucket}/mlflow-artifacts/*"],
        },
        {
            "Sid": "ArtifactListing",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket],
            "Condition": {"StringLike": {"s3:prefix": ["mlflow-artifacts", "mlflow-artifacts/*"]}},
        },
    ]


def test_aws_ssm_agent_install_waits_for_dpkgs_lock_on_a_first_boot():
    run = stack_harness.run(config("aws", "dev", sshAllowedCidrs=None))
    user_data = yaml.safe_load(revealed(run.one("aws:ec2/instance:Instance").inputs["userData"]))
    assert user_data["runcmd"] == [
        "curl -fsSL --retry 5 -o /run/amazon-ssm-agent.deb https://s3.eu-central-1.amazonaws.com"
        "/amazon-ssm-eu-central-1/latest/debian_amd64/amazon-ssm-agent.deb",
        "apt-get -o DPkg::Lock::Timeout=600 install -y /run/amazon-ssm-agent.deb",
        "rm -f /run/amazon-ssm-agent.deb",
        "systemctl enable --now amazon-ssm-agent",
    ]


def test_the_database_ca_and_host_key_literals(aws_dev, gcp_dev):
    ip = gcp_dev.one("gcp:sql/databaseInstance:DatabaseInstance").inputs["settings"]
    assert ip["ipConfiguration"]["serverCaMode"] == "GOOGLE_MANAGED_CAS_CA"
    assert aws_dev.outputs["db_ca_url"] == (
        "https://truststore.pki.rds.amazonaws.com/eu-central-1/eu-central-1-bundle.pem"
    )
    for run in (aws_dev, gcp_dev):
        assert run.one("tls:index/privateKey:PrivateKey").inputs == {"algorithm": "ED25519"}
