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


def leak_group(session, stack: str, prefix: str) -> dict[str, str]:
    """What ``topology: group`` adds, tagged as the stack tags it: the launch template and
    Auto Scaling group (tags given on to its instances), the load balancer, its target
    group, listener and certificate, a NAT gateway with its Elastic IP. Their names/ids."""
    tags = kit_tags(stack)
    ec2 = session.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    template = ec2.create_launch_template(
        LaunchTemplateName=f"{prefix}-servers",
        LaunchTemplateData={"ImageId": "ami-03cf127a", "InstanceType": "t3.small"},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}],
    )["LaunchTemplate"]["LaunchTemplateId"]
    session.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=f"{prefix}-servers",
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(subnets),
        Tags=[{**tag, "PropagateAtLaunch": True} for tag in tags],
    )
    elbv2 = session.client("elbv2")
    balancer = elbv2.create_load_balancer(
        Name=f"{prefix}-alb", Subnets=subnets, Type="application", Tags=tags
    )["LoadBalancers"][0]["LoadBalancerArn"]
    targets = elbv2.create_target_group(
        Name=f"{prefix}-targets", Protocol="HTTPS", Port=443, VpcId=vpc, Tags=tags
    )["TargetGroups"][0]["TargetGroupArn"]
    certificate = session.client("acm").request_certificate(
        DomainName="mlflow.example.com", ValidationMethod="DNS", Tags=tags
    )["CertificateArn"]
    listener = elbv2.create_listener(
        LoadBalancerArn=balancer,
        Protocol="HTTPS",
        Port=443,
        Certificates=[{"CertificateArn": certificate}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": targets}],
        Tags=tags,
    )["Listeners"][0]["ListenerArn"]
    address = ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags}]
    )["AllocationId"]
    nat = ec2.create_nat_gateway(
        SubnetId=subnets[0],
        AllocationId=address,
        TagSpecifications=[{"ResourceType": "natgateway", "Tags": tags}],
    )["NatGateway"]["NatGatewayId"]
    return {
        "asg": f"{prefix}-servers",
        "launch_template": template,
        "balancer": balancer,
        "targets": targets,
        "listener": listener,
        "certificate": certificate,
        "address": address,
        "nat": nat,
    }
