"""Find and remove AWS resources by the kit's tags, with boto3.

Regional resources come from the Resource Groups Tagging API (one query for
EC2, RDS, S3, Elastic Load Balancing, ACM and the rest). IAM is global and not covered
by that API, so roles, instance profiles and customer-managed policies are listed
directly; nor are Auto Scaling groups ("GetResources ... aren't supported at this time
and return an empty response" for them: "Services that support the Resource Groups
Tagging API", docs.aws.amazon.com/resourcegroupstagging/latest/APIReference/
supported-services.html), so they are asked of Auto Scaling itself
(DescribeAutoScalingGroups with its ``tag:<key>`` and ``tag-key`` filters). An Auto
Scaling group left behind launches new instances for every one removed, so it goes
first. EC2
instances stay visible for about an hour after termination: their state is
checked and terminated ones are not leftovers.

The endpoint comes from ``endpoint_url`` or boto3's own ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import boto3

from provisioning.teststacks.leftovers import CannotRemove, Leftover

#: Tag filter: tag key -> required value, or None for "any value".
TagFilter = dict[str, str | None]
_GONE_STATES = {"terminated"}
# Removal order for orphans: what holds a dependency goes first.
_ORDER = (
    "autoscaling group",
    "ec2 instance",
    "elasticloadbalancing listener",
    "elasticloadbalancing loadbalancer",
    "elasticloadbalancing targetgroup",
    "acm certificate",
    "ec2 launch-template",
    "ec2 natgateway",
    "ec2 elastic-ip",
    "rds db",
    "s3 bucket",
    "iam instance-profile",
    "iam role",
    "iam policy",
    "ec2 security-group",
)


class Aws:
    """boto3 clients for one account and region."""

    def __init__(
        self,
        region: str,
        *,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
    ):
        self.region = region
        self._session = session or boto3.session.Session()
        self._endpoint_url = endpoint_url

    def client(self, service: str):
        return self._session.client(
            service, region_name=self.region, endpoint_url=self._endpoint_url
        )


def matches(tags: dict[str, str], wanted: TagFilter) -> bool:
    return all(
        key in tags and (value is None or tags[key] == value) for key, value in wanted.items()
    )


def find(aws: Aws, wanted: TagFilter) -> list[Leftover]:
    """Every resource in the account/region whose tags match ``wanted``."""
    found = [_regional(aws, arn, tags) for arn, tags in _tagged_arns(aws, wanted)]
    found = _drop_terminated(aws, found)
    found += list(_auto_scaling_groups(aws, wanted))
    found += list(_iam(aws, wanted))
    unique = {item.ident: item for item in found}
    return sorted(unique.values(), key=_removal_rank)


def _auto_scaling_groups(aws: Aws, wanted: TagFilter) -> Iterator[Leftover]:
    # DescribeAutoScalingGroups' filters (Auto Scaling API Reference, Filter): "tag:<key>"
    # for a key with one of the values, "tag-key" for the key with any value; ANDed.
    filters = [
        {"Name": f"tag:{key}", "Values": [value]}
        if value is not None
        else {"Name": "tag-key", "Values": [key]}
        for key, value in wanted.items()
    ]
    pages = aws.client("autoscaling").get_paginator("describe_auto_scaling_groups")
    for page in pages.paginate(Filters=filters):
        for group in page["AutoScalingGroups"]:
            tags = _tags(group)
            if matches(tags, wanted):
                name = group["AutoScalingGroupName"]
                yield Leftover(
                    "aws",
                    "autoscaling group",
                    name,
                    group["AutoScalingGroupARN"],
                    # --force-delete terminates its instances with it.
                    "aws autoscaling delete-auto-scaling-group --auto-scaling-group-name"
                    f" {name} --force-delete --region {aws.region}",
                    tags,
                    state=group.get("Status", ""),
                    location=aws.region,
                )


def _tagged_arns(aws: Aws, wanted: TagFilter) -> Iterator[tuple[str, dict[str, str]]]:
    filters = [
        {"Key": key, "Values": [value]} if value is not None else {"Key": key}
        for key, value in wanted.items()
    ]
    pages = aws.client("resourcegroupstaggingapi").get_paginator("get_resources")
    for page in pages.paginate(TagFilters=filters):
        for mapping in page.get("ResourceTagMappingList", []):
            tags = {tag["Key"]: tag["Value"] for tag in mapping.get("Tags", [])}
            if matches(tags, wanted):
                yield mapping["ResourceARN"], tags


def _regional(aws: Aws, arn: str, tags: dict[str, str]) -> Leftover:
    # arn:partition:service:region:account:resource
    _, _, service, region, _, resource = arn.split(":", 5)
    region = region or aws.region
    where = f" --region {region}"
    if service == "s3":
        return Leftover(
            "aws", "s3 bucket", resource, arn, f"aws s3 rb s3://{resource} --force", tags
        )
    if service == "rds" and resource.startswith("db:"):
        name = resource[3:]
        command = (
            f"aws rds delete-db-instance --db-instance-identifier {name}"
            f" --skip-final-snapshot --delete-automated-backups{where}"
        )
        return Leftover("aws", "rds db", name, arn, command, tags, location=region)
    if service == "rds" and resource.startswith("subgrp:"):
        name = resource[7:]
        command = f"aws rds delete-db-subnet-group --db-subnet-group-name {name}{where}"
        return Leftover("aws", "rds subnet-group", name, arn, command, tags, location=region)
    if service == "rds" and resource.startswith("pg:"):
        name = resource[3:]
        command = f"aws rds delete-db-parameter-group --db-parameter-group-name {name}{where}"
        return Leftover("aws", "rds parameter-group", name, arn, command, tags, location=region)
    if service == "elasticloadbalancing":
        # loadbalancer/app/NAME/ID, targetgroup/NAME/ID, listener/app/NAME/ID/ID: removed
        # by ARN (elbv2 delete-load-balancer, delete-target-group, delete-listener).
        kind = resource.split("/", 1)[0]
        parts = resource.split("/")
        name = parts[2] if kind in ("loadbalancer", "listener") else parts[1]
        verb = {"loadbalancer": "load-balancer", "targetgroup": "target-group"}.get(kind, kind)
        command = f"aws elbv2 delete-{verb} --{verb}-arn {arn}{where}"
        return Leftover(
            "aws", f"elasticloadbalancing {kind}", name, arn, command, tags, location=region
        )
    if service == "acm" and resource.startswith("certificate/"):
        command = f"aws acm delete-certificate --certificate-arn {arn}{where}"
        return Leftover(
            "aws", "acm certificate", resource[12:], arn, command, tags, location=region
        )
    if service == "ec2" and "/" in resource:
        kind, ident = resource.split("/", 1)
        known = _EC2_COMMANDS.get(kind)
        command = known.format(id=ident, where=where) + where if known else _generic_command(arn)
        return Leftover("aws", f"ec2 {kind}", ident, arn, command, tags, location=region)
    return Leftover(
        "aws",
        f"{service} {resource.split('/')[0]}",
        resource,
        arn,
        _generic_command(arn),
        tags,
        location=region,
    )


_EC2_COMMANDS = {
    "instance": "aws ec2 terminate-instances --instance-ids {id}",
    "security-group": "aws ec2 delete-security-group --group-id {id}",
    "volume": "aws ec2 delete-volume --volume-id {id}",
    "subnet": "aws ec2 delete-subnet --subnet-id {id}",
    "vpc": "aws ec2 delete-vpc --vpc-id {id}",
    "route-table": "aws ec2 delete-route-table --route-table-id {id}",
    "network-interface": "aws ec2 delete-network-interface --network-interface-id {id}",
    "elastic-ip": "aws ec2 release-address --allocation-id {id}",
    # A key pair's ARN ends in its name (IAM: arn:...:key-pair/${KeyPairName}).
    "key-pair": "aws ec2 delete-key-pair --key-name {id}",
    "snapshot": "aws ec2 delete-snapshot --snapshot-id {id}",
    "natgateway": "aws ec2 delete-nat-gateway --nat-gateway-id {id}",
    "launch-template": "aws ec2 delete-launch-template --launch-template-id {id}",
    # An attached gateway cannot be deleted: detach it from its VPC first.
    "internet-gateway": "aws ec2 detach-internet-gateway --internet-gateway-id {id} --vpc-id"
    " $(aws ec2 describe-internet-gateways --internet-gateway-ids {id}"
    " --query 'InternetGateways[0].Attachments[0].VpcId' --output text{where})"
    " && aws ec2 delete-internet-gateway --internet-gateway-id {id}",
}


def _generic_command(arn: str) -> str:
    return f"# no removal command known; delete {arn} in the console or with its service's CLI"


def _drop_terminated(aws: Aws, found: list[Leftover]) -> list[Leftover]:
    instances = {item.name: item for item in found if item.kind == "ec2 instance"}
    if not instances:
        return found
    ec2 = aws.client("ec2")
    gone = set()
    for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=list(instances)):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                state = instance["State"]["Name"]
                instances[instance["InstanceId"]].state = state
                if state in _GONE_STATES:
                    gone.add(instance["InstanceId"])
    return [item for item in found if not (item.kind == "ec2 instance" and item.name in gone)]


def _iam(aws: Aws, wanted: TagFilter) -> Iterator[Leftover]:
    iam = aws.client("iam")
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            if role.get("Path", "/").startswith("/aws-service-role/"):
                continue
            tags = _tags(iam.list_role_tags(RoleName=role["RoleName"]))
            if matches(tags, wanted):
                yield Leftover(
                    "aws",
                    "iam role",
                    role["RoleName"],
                    role["Arn"],
                    " && ".join(_role_removal_steps(iam, role["RoleName"])),
                    tags,
                    location="global",
                )
    for page in iam.get_paginator("list_instance_profiles").paginate():
        for profile in page["InstanceProfiles"]:
            name = profile["InstanceProfileName"]
            # GetInstanceProfile carries the tags on every implementation; the listing may not.
            tags = _tags(iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"])
            if matches(tags, wanted):
                steps = [
                    f"aws iam remove-role-from-instance-profile --instance-profile-name {name}"
                    f" --role-name {role['RoleName']}"
                    for role in profile.get("Roles", [])
                ]
                steps.append(f"aws iam delete-instance-profile --instance-profile-name {name}")
                yield Leftover(
                    "aws",
                    "iam instance-profile",
                    name,
                    profile["Arn"],
                    " && ".join(steps),
                    tags,
                    location="global",
                )
    for page in iam.get_paginator("list_policies").paginate(Scope="Local"):
        for policy in page["Policies"]:
            tags = _tags(iam.list_policy_tags(PolicyArn=policy["Arn"]))
            if matches(tags, wanted):
                yield Leftover(
                    "aws",
                    "iam policy",
                    policy["PolicyName"],
                    policy["Arn"],
                    f"aws iam delete-policy --policy-arn {policy['Arn']}",
                    tags,
                    location="global",
                )


def _tags(response: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in response.get("Tags", [])}


def _role_removal_steps(iam, role: str) -> list[str]:
    steps = []
    for page in iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=role):
        for profile in page["InstanceProfiles"]:
            steps.append(
                "aws iam remove-role-from-instance-profile --instance-profile-name"
                f" {profile['InstanceProfileName']} --role-name {role}"
            )
    for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
        for policy in page["AttachedPolicies"]:
            steps.append(
                f"aws iam detach-role-policy --role-name {role} --policy-arn {policy['PolicyArn']}"
            )
    for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
        for name in page["PolicyNames"]:
            steps.append(f"aws iam delete-role-policy --role-name {role} --policy-name {name}")
    steps.append(f"aws iam delete-role --role-name {role}")
    return steps


def _removal_rank(item: Leftover) -> tuple[int, str]:
    rank = _ORDER.index(item.kind) if item.kind in _ORDER else len(_ORDER)
    return rank, item.name


# --- removal, for orphans the reaper finds ----------------------------------------


def remove(aws: Aws, item: Leftover) -> None:
    """Delete one leftover with the API (the same effect as its remove command)."""
    remover = _REMOVERS.get(item.kind)
    if remover is None:
        raise CannotRemove(f"no automatic removal for {item.describe()}; {item.remove_command}")
    remover(aws, item)


def _remove_instance(aws: Aws, item: Leftover) -> None:
    aws.client("ec2").terminate_instances(InstanceIds=[item.name])


def _remove_security_group(aws: Aws, item: Leftover) -> None:
    aws.client("ec2").delete_security_group(GroupId=item.name)


def _remove_db(aws: Aws, item: Leftover) -> None:
    aws.client("rds").delete_db_instance(
        DBInstanceIdentifier=item.name, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
    )


def _remove_bucket(aws: Aws, item: Leftover) -> None:
    s3 = aws.client("s3")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=item.name):
        doomed = [
            {"Key": entry["Key"], "VersionId": entry["VersionId"]}
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            s3.delete_objects(Bucket=item.name, Delete={"Objects": doomed, "Quiet": True})
    s3.delete_bucket(Bucket=item.name)


def _remove_role(aws: Aws, item: Leftover) -> None:
    iam = aws.client("iam")
    role = item.name
    for profile in iam.list_instance_profiles_for_role(RoleName=role)["InstanceProfiles"]:
        iam.remove_role_from_instance_profile(
            InstanceProfileName=profile["InstanceProfileName"], RoleName=role
        )
    for policy in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=role, PolicyArn=policy["PolicyArn"])
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role, PolicyName=name)
    iam.delete_role(RoleName=role)


def _remove_instance_profile(aws: Aws, item: Leftover) -> None:
    iam = aws.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName=item.name)["InstanceProfile"]
    for role in profile.get("Roles", []):
        iam.remove_role_from_instance_profile(
            InstanceProfileName=item.name, RoleName=role["RoleName"]
        )
    iam.delete_instance_profile(InstanceProfileName=item.name)


def _remove_policy(aws: Aws, item: Leftover) -> None:
    iam = aws.client("iam")
    for page in iam.get_paginator("list_entities_for_policy").paginate(PolicyArn=item.ident):
        for role in page.get("PolicyRoles", []):
            iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=item.ident)
    iam.delete_policy(PolicyArn=item.ident)


def _remove_auto_scaling_group(aws: Aws, item: Leftover) -> None:
    aws.client("autoscaling").delete_auto_scaling_group(
        AutoScalingGroupName=item.name, ForceDelete=True
    )


def _remove_launch_template(aws: Aws, item: Leftover) -> None:
    aws.client("ec2").delete_launch_template(LaunchTemplateId=item.name)


def _remove_load_balancer(aws: Aws, item: Leftover) -> None:
    aws.client("elbv2").delete_load_balancer(LoadBalancerArn=item.ident)


def _remove_target_group(aws: Aws, item: Leftover) -> None:
    aws.client("elbv2").delete_target_group(TargetGroupArn=item.ident)


def _remove_listener(aws: Aws, item: Leftover) -> None:
    aws.client("elbv2").delete_listener(ListenerArn=item.ident)


def _remove_certificate(aws: Aws, item: Leftover) -> None:
    aws.client("acm").delete_certificate(CertificateArn=item.ident)


_REMOVERS: dict[str, Callable[[Aws, Leftover], None]] = {
    "autoscaling group": _remove_auto_scaling_group,
    "ec2 launch-template": _remove_launch_template,
    "elasticloadbalancing loadbalancer": _remove_load_balancer,
    "elasticloadbalancing targetgroup": _remove_target_group,
    "elasticloadbalancing listener": _remove_listener,
    "acm certificate": _remove_certificate,
    "ec2 instance": _remove_instance,
    "ec2 security-group": _remove_security_group,
    "rds db": _remove_db,
    "s3 bucket": _remove_bucket,
    "iam role": _remove_role,
    "iam instance-profile": _remove_instance_profile,
    "iam policy": _remove_policy,
}
