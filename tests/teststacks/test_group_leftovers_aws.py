"""What ``topology: group`` adds on AWS is found after a teardown, against moto.

moto validates every call's parameters against botocore's service models, as the real
API does (unknown or missing parameter names fail before a request is sent). What moto
does differently: its Resource Groups Tagging API (moto 5) leaves out launch templates,
Elastic IPs and listeners, which AWS's GetResources returns ("support all resource
types", Auto Scaling groups excepted: "Services that support the Resource Groups
Tagging API"); ``tagging_as_aws`` adds them as AWS would list them. Neither lists
Auto Scaling groups, so those come from DescribeAutoScalingGroups, as on AWS.
"""

from __future__ import annotations

import pytest

from provisioning.teststacks import aws as aws_api
from provisioning.teststacks import teardown
from teststacks.aws_leaks import REGION, kit_tags, leak_group

pytestmark = pytest.mark.service
STACK = "test-ci-7"


ACCOUNT = "123456789012"


@pytest.fixture
def tagging_as_aws(monkeypatch):
    """The ARNs AWS's GetResources lists and moto's leaves out, per leaked stack."""
    extra: dict[str, list[tuple[str, dict[str, str]]]] = {}
    real = aws_api._tagged_arns

    def tagged(client, wanted):
        yield from real(client, wanted)
        for arn, tags in extra.get(wanted.get("mlflow-kit-stack"), []):
            if aws_api.matches(tags, wanted):
                yield arn, tags

    def add(stack: str, leaked: dict[str, str]) -> None:
        tags = {t["Key"]: t["Value"] for t in kit_tags(stack)}
        ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
        extra[stack] = [
            (f"{ec2}:launch-template/{leaked['launch_template']}", tags),
            (f"{ec2}:elastic-ip/{leaked['address']}", tags),
            (leaked["listener"], tags),
        ]

    monkeypatch.setattr(aws_api, "_tagged_arns", tagged)
    return add


def test_a_groups_resources_are_listed_with_their_removal_commands(aws, tagging_as_aws):
    leaked = leak_group(aws, STACK, "ci7")
    other = leak_group(aws, "test-ci-8", "ci8")
    tagging_as_aws(STACK, leaked)
    tagging_as_aws("test-ci-8", other)
    found = aws_api.find(aws_api.Aws(REGION), teardown.stack_filter(STACK))
    kinds = {item.kind: item for item in found}
    where = f"--region {REGION}"
    assert kinds["autoscaling group"].remove_command == (
        f"aws autoscaling delete-auto-scaling-group --auto-scaling-group-name {leaked['asg']}"
        f" --force-delete {where}"
    )
    assert kinds["ec2 launch-template"].remove_command == (
        f"aws ec2 delete-launch-template --launch-template-id {leaked['launch_template']} {where}"
    )
    assert kinds["elasticloadbalancing loadbalancer"].remove_command == (
        f"aws elbv2 delete-load-balancer --load-balancer-arn {leaked['balancer']} {where}"
    )
    assert kinds["elasticloadbalancing targetgroup"].remove_command == (
        f"aws elbv2 delete-target-group --target-group-arn {leaked['targets']} {where}"
    )
    assert kinds["acm certificate"].remove_command == (
        f"aws acm delete-certificate --certificate-arn {leaked['certificate']} {where}"
    )
    assert kinds["ec2 natgateway"].remove_command == (
        f"aws ec2 delete-nat-gateway --nat-gateway-id {leaked['nat']} {where}"
    )
    assert kinds["ec2 elastic-ip"].remove_command == (
        f"aws ec2 release-address --allocation-id {leaked['address']} {where}"
    )
    # Once each, this stack's only.
    assert len({item.ident for item in found}) == len(found)
    idents = " ".join(item.ident + " " + item.name for item in found)
    for value in other.values():
        assert value not in idents
    # The Auto Scaling group first (it relaunches what is removed before it), the
    # listener before its balancer and certificate, the NAT gateway before its address.
    order = [item.kind for item in found]
    assert order[0] == "autoscaling group"
    assert order.index("elasticloadbalancing listener") < order.index(
        "elasticloadbalancing loadbalancer"
    )
    assert order.index("elasticloadbalancing listener") < order.index("acm certificate")
    assert order.index("ec2 natgateway") < order.index("ec2 elastic-ip")


def test_the_auto_scaling_group_is_asked_of_auto_scaling(aws, monkeypatch):
    # As on AWS: the Tagging API says nothing of Auto Scaling groups.
    leaked = leak_group(aws, STACK, "ci7")
    real = aws_api._tagged_arns

    def without_groups(client, wanted):
        for arn, tags in real(client, wanted):
            if ":autoscaling:" not in arn:
                yield arn, tags

    monkeypatch.setattr(aws_api, "_tagged_arns", without_groups)
    found = aws_api.find(aws_api.Aws(REGION), teardown.stack_filter(STACK))
    assert [i.name for i in found if i.kind == "autoscaling group"] == [leaked["asg"]]


def test_the_reaper_removes_the_group_before_anything_it_would_relaunch(aws, tagging_as_aws):
    tagging_as_aws(STACK, leak_group(aws, STACK, "ci7"))
    client = aws_api.Aws(REGION)
    for item in aws_api.find(client, teardown.stack_filter(STACK)):
        if item.kind in ("autoscaling group", "ec2 launch-template"):
            aws_api.remove(client, item)
    left = {item.kind for item in aws_api.find(client, teardown.stack_filter(STACK))}
    assert "autoscaling group" not in left
    ec2 = aws.client("ec2")
    assert not ec2.describe_launch_templates()["LaunchTemplates"]
