"""Create tagged resources in moto as a stack would, to leak some on purpose."""

from __future__ import annotations

import json

from stacks import contract

REGION = "us-east-1"
ASSUME_EC2 = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)

BUCKET_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
)


def kit_tags(stack: str, env: str = "test", expires: str | None = "202501311200") -> list[dict]:
    tags = {contract.LABEL_STACK: stack, contract.LABEL_ENVIRONMENT: env, "Name": f"{stack}-thing"}
    if expires:
        tags[contract.LABEL_EXPIRES] = expires
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def leak_stack(session, stack: str, prefix: str, **tag_options) -> dict[str, str]:
    """One of each kind the stacks create (VM, SG, database, bucket, role, profile); their names."""
    tags = kit_tags(stack, **tag_options)
    ec2 = session.client("ec2")
    image = "ami-03cf127a"  # any id will do for moto; describe_images costs a second
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(
        GroupName=f"{prefix}-sg",
        Description="mlflow server",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]
    instance = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.small",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    session.client("rds").create_db_instance(
        DBInstanceIdentifier=f"{prefix}-db",
        DBInstanceClass="db.t4g.micro",
        Engine="postgres",
        MasterUsername="mlflow",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
        Tags=tags,
    )
    s3 = session.client("s3")
    s3.create_bucket(Bucket=f"{prefix}-artifacts")
    s3.put_bucket_tagging(Bucket=f"{prefix}-artifacts", Tagging={"TagSet": tags})
    s3.put_object(Bucket=f"{prefix}-artifacts", Key="runs/1/model.pkl", Body=b"x")
    iam = session.client("iam")
    iam.create_role(RoleName=f"{prefix}-vm-role", AssumeRolePolicyDocument=ASSUME_EC2, Tags=tags)
    policy = iam.create_policy(
        PolicyName=f"{prefix}-bucket-access",
        PolicyDocument=BUCKET_POLICY,
        Tags=tags,
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=f"{prefix}-vm-role", PolicyArn=policy)
    iam.put_role_policy(
        RoleName=f"{prefix}-vm-role", PolicyName="logs", PolicyDocument=BUCKET_POLICY
    )
    iam.create_instance_profile(InstanceProfileName=f"{prefix}-vm-profile", Tags=tags)
    iam.add_role_to_instance_profile(
        InstanceProfileName=f"{prefix}-vm-profile", RoleName=f"{prefix}-vm-role"
    )
    return {
        "instance": instance,
        "security_group": group,
        "db": f"{prefix}-db",
        "bucket": f"{prefix}-artifacts",
        "role": f"{prefix}-vm-role",
        "profile": f"{prefix}-vm-profile",
        "policy": f"{prefix}-bucket-access",
    }


def aws_stack_config(environment: str = "test", expires: str = "202501311200") -> dict[str, str]:
    return {
        "cloud": "aws",
        "environment": environment,
        "expiresAt": expires,
        "aws:region": REGION,
        "httpsAllowedCidrs": '["203.0.113.0/24"]',
    }
