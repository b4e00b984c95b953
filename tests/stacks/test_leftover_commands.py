"""The removal commands teardown prints work in the order the clouds demand."""

from __future__ import annotations

import pytest

from provisioning.teststacks import aws

pytestmark = pytest.mark.unit


def test_a_key_pair_is_removed_by_the_name_its_arn_carries():
    item = aws._regional(
        aws.Aws("eu-central-1"), "arn:aws:ec2:eu-central-1:123456789012:key-pair/vm-key-abc1234", {}
    )
    assert item.remove_command == (
        "aws ec2 delete-key-pair --key-name vm-key-abc1234 --region eu-central-1"
    )


def test_an_internet_gateway_is_detached_before_it_is_deleted():
    arn = "arn:aws:ec2:eu-central-1:123456789012:internet-gateway/igw-0abc"
    command = aws._regional(aws.Aws("eu-central-1"), arn, {}).remove_command
    detach, delete = command.split(" && ")
    assert detach.startswith(
        "aws ec2 detach-internet-gateway --internet-gateway-id igw-0abc --vpc-id $("
    )
    assert "--region eu-central-1)" in detach
    assert (
        delete
        == "aws ec2 delete-internet-gateway --internet-gateway-id igw-0abc --region eu-central-1"
    )
