"""Security properties of the AWS stack, resource by resource, under Pulumi mocks."""

from __future__ import annotations

import json

import pytest
import stack_harness
from stack_harness import DB_ADDRESS, HTTPS_CIDR, INSTANCE_ID, SSH_CIDR

from stacks import contract
from stacks.aws.policies import artifact_access_policy

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
GROUP = "aws:ec2/securityGroup:SecurityGroup"
WORLD = ("0.0.0.0/0", "::/0")


def config(**overrides):
    """The AWS dev stack of these tests: a user label besides the kit's."""
    return stack_harness.config("aws", "dev", **{"labels": {"team": "ml-platform"}, **overrides})


def run_stack(values):
    return stack_harness.run(values)


@pytest.fixture(scope="module")
def dev():
    return run_stack(config())


def covers(rule: dict, port: int) -> bool:
    if rule["ipProtocol"] == "-1":
        return True
    return rule.get("fromPort", 0) <= port <= rule.get("toPort", 65535)


def group_id(run, name: str) -> str:
    assert any(r.name == name for r in run.mocks.of_type(GROUP))
    return f"{name}-id"


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "httpsAllowedCidrs": json.dumps(["0.0.0.0/0"]),
            "sshAllowedCidrs": json.dumps(["0.0.0.0/0"]),
        },
    ],
    ids=["defaults", "world-open-https-and-ssh"],
)
def test_no_group_admits_the_world_on_ssh_or_postgres_except_ssh_by_explicit_setting(overrides):
    run = run_stack(config(**overrides))
    for rule in run.mocks.of_type(INGRESS):
        source = rule.inputs.get("cidrIpv4") or rule.inputs.get("cidrIpv6")
        assert not (source in WORLD and covers(rule.inputs, 5432)), rule
        if source in WORLD and covers(rule.inputs, 22):
            # Only the explicit sshAllowedCidrs value opens 22 to the world.
            assert overrides.get("sshAllowedCidrs") == json.dumps([source])


def test_default_ingress_is_exactly_https_and_ssh_from_the_listed_cidrs(dev):
    vm_group = group_id(dev, "security-vm")
    rules = {
        (r.inputs["fromPort"], r.inputs.get("cidrIpv4"))
        for r in dev.mocks.of_type(INGRESS)
        if r.inputs["securityGroupId"] == vm_group
    }
    assert rules == {(443, HTTPS_CIDR), (22, SSH_CIDR)}


def test_database_group_admits_only_the_vm_group_on_5432(dev):
    db_group, vm_group = group_id(dev, "security-db"), group_id(dev, "security-vm")
    rules = [
        r.inputs for r in dev.mocks.of_type(INGRESS) if r.inputs["securityGroupId"] == db_group
    ]
    assert len(rules) == 1
    (rule,) = rules
    assert rule["referencedSecurityGroupId"] == vm_group
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (5432, 5432, "tcp")
    assert not any(k in rule for k in ("cidrIpv4", "cidrIpv6", "prefixListId"))
    # And no egress from the database at all.
    assert not [r for r in dev.mocks.of_type(EGRESS) if r.inputs["securityGroupId"] == db_group]
    # The rules are separate resources; an inline rule would bypass the checks above.
    for group in dev.mocks.of_type(GROUP):
        assert "ingress" not in group.inputs and "egress" not in group.inputs


def test_rds_is_private_encrypted_and_forces_tls(dev):
    db = dev.mocks.one("aws:rds/instance:Instance").inputs
    assert db["publiclyAccessible"] is False
    assert db["storageEncrypted"] is True
    params = dev.mocks.one("aws:rds/parameterGroup:ParameterGroup").inputs
    assert params["family"] == "postgres16"
    assert {"name": "rds.force_ssl", "value": "1", "applyMethod": "immediate"} in params[
        "parameters"
    ]
    assert db["parameterGroupName"] == "database-params-abc1234"
    assert db["dbSubnetGroupName"] == "database-subnets-abc1234"
    subnets = dev.mocks.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]
    assert subnets == ["network-private-0-id", "network-private-1-id"]


def test_database_subnets_are_private_in_two_zones_and_the_vm_subnet_public(dev):
    subnets = {s.name: s.inputs for s in dev.mocks.of_type("aws:ec2/subnet:Subnet")}
    zones = {subnets[f"network-private-{i}"]["availabilityZone"] for i in range(2)}
    assert len(zones) == 2
    associations = {
        a.inputs["subnetId"]: a.inputs["routeTableId"]
        for a in dev.mocks.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    }
    routes = dev.mocks.of_type("aws:ec2/route:Route")
    internet_tables = {r.inputs["routeTableId"] for r in routes if "gatewayId" in r.inputs}
    assert associations["network-private-0-id"] not in internet_tables
    assert associations["network-private-1-id"] not in internet_tables
    assert associations["network-public-0-id"] in internet_tables
    assert dev.mocks.one("aws:ec2/instance:Instance").inputs["subnetId"] == "network-public-0-id"


def test_bucket_blocks_public_access_enforces_ownership_tls_and_encryption(dev):
    bucket = "artifacts-bucket-0a1b2c3"
    block = dev.mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert block["bucket"] == bucket
    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        assert block[flag] is True, flag
    ownership = dev.mocks.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    sse = dev.mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    assert sse["bucket"] == bucket
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in (
        "AES256",
        "aws:kms",
    )
    policy = json.loads(dev.mocks.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert set(deny["Resource"]) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}


def test_bucket_is_versioned_with_lifecycle(dev):
    versioning = dev.mocks.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    rules = dev.mocks.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    by_id = {r["id"]: r for r in rules.inputs["rules"]}
    assert (
        by_id["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    )
    assert (
        by_id["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        == 7
    )
    assert "expire-artifacts" not in by_id


def test_role_policy_names_only_this_bucket_and_prefix(dev):
    bucket = "artifacts-bucket-0a1b2c3"
    policy = json.loads(dev.mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert policy == artifact_access_policy(bucket, "mlflow-artifacts")
    resources = [r for s in policy["Statement"] for r in s["Resource"]]
    assert resources and all(r.startswith(f"arn:aws:s3:::{bucket}") for r in resources)
    assert not any("*" in r.removesuffix("/mlflow-artifacts/*") for r in resources)
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
    }
    # A failed multipart upload (boto3's, or a client's presigned one that MLflow's
    # server aborts) can be aborted under the prefix, and only there.
    (objects,) = [s for s in policy["Statement"] if "s3:AbortMultipartUpload" in s["Action"]]
    assert objects["Resource"] == [f"arn:aws:s3:::{bucket}/mlflow-artifacts/*"]
    (listing,) = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [
        "mlflow-artifacts",
        "mlflow-artifacts/*",
    ]
    trust = json.loads(dev.mocks.one("aws:iam/role:Role").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    # SSH by CIDR: no Session Manager policy on the role.
    assert not dev.mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")


def test_vm_requires_imdsv2_encrypts_its_root_volume_and_uses_the_profile(dev):
    vm = dev.mocks.one("aws:ec2/instance:Instance").inputs
    assert vm["metadataOptions"]["httpTokens"] == "required"
    assert vm["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert vm["rootBlockDevice"]["encrypted"] is True
    assert vm["iamInstanceProfile"] == "identity-profile-abc1234"
    assert vm["vpcSecurityGroupIds"] == ["security-vm-id"]
    assert vm["keyName"] == "vm-key-abc1234"
    assert "securityGroups" not in vm and "associatePublicIpAddress" not in vm


def test_vm_runs_the_debian_12_image_from_debians_account(dev):
    (ami_args,) = [args for token, args in dev.mocks.calls if token == "aws:ec2/getAmi:getAmi"]
    assert ami_args["owners"] == ["136693071363"]
    assert {"name": "name", "values": ["debian-12-amd64-*"]} in ami_args["filters"]
    assert ami_args["mostRecent"] is True
    assert dev.mocks.one("aws:ec2/instance:Instance").inputs["ami"] == "ami-0debian12fake0001"


def test_elastic_ip_is_a_vpc_address_associated_with_the_vm(dev):
    assert dev.mocks.one("aws:ec2/eip:Eip").inputs["domain"] == "vpc"
    association = dev.mocks.one("aws:ec2/eipAssociation:EipAssociation").inputs
    assert association == {"allocationId": "eipalloc-0fake", "instanceId": INSTANCE_ID}
    assert dev.outputs[contract.HOST] == "203.0.113.10"


def test_every_aws_resource_goes_through_the_tagging_provider(dev):
    provider = dev.mocks.one("pulumi:providers:aws")
    tags = dev.mocks.provider_tags()
    assert tags == {
        "team": "ml-platform",
        contract.LABEL_STACK: "aws-dev",
        contract.LABEL_ENVIRONMENT: "dev",
    }
    assert provider.inputs["region"] == "eu-central-1"
    for resource in dev.mocks.customs():
        if resource.typ.startswith("aws:"):
            # Not the default provider (no tags): the stack's own one, named "aws".
            assert resource.provider.endswith("$pulumi:providers:aws::aws::aws-id"), resource.name


def test_taggable_resources_carry_the_labels_and_a_name(dev):
    untaggable = {"aws:ec2/route:Route", "aws:ec2/routeTableAssociation:RouteTableAssociation"}
    for resource in dev.mocks.customs():
        if not resource.typ.startswith("aws:") or resource.typ in untaggable:
            continue
        if "tags" not in resource.inputs:
            # Sub-resources of the bucket, role and EIP take no tags of their own.
            assert resource.typ.split(":")[1].split("/")[0] in ("s3", "iam", "ec2"), resource.typ
            assert resource.typ.split(":")[2] not in ("Bucket", "Role", "Instance", "Vpc")
            continue
        tags = resource.inputs["tags"]
        assert tags[contract.LABEL_STACK] == "aws-dev", resource.name
        assert tags["Name"].startswith("aws-dev-"), resource.name


def test_backend_store_uri_points_at_the_rds_endpoint_over_tls(dev):
    uri = dev.outputs[contract.BACKEND_STORE_URI]
    assert uri.startswith("postgresql+psycopg2://mlflow:")
    assert uri.endswith(f"@{DB_ADDRESS}:5432/mlflow?sslmode=require")
