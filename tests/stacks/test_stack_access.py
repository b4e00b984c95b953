"""Stack outputs -> how bootstrap reaches the VM and which server settings it applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.settings import deployment_from_outputs
from provisioning.stack_access import (
    StackAccessError,
    proxy_command,
    server_settings,
    stack_overrides,
)

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GCP = json.loads((FIXTURES / "stack-output-gcp.json").read_text())
AWS = json.loads((FIXTURES / "stack-output-aws.json").read_text())
IAP = (
    "gcloud compute start-iap-tunnel mlflow-vm-instance-5e2a9c1 22 --listen-on-stdin"
    " --zone europe-west1-b --project my-project-id"
)
SSM = (
    "aws ssm start-session --target i-0a1b2c3d4e5f60718 --document-name AWS-StartSSHSession"
    " --parameters portNumber=22 --region eu-central-1"
)

CASES = [
    # (outputs, ssh_tunnel, expected ProxyCommand)
    (GCP, "auto", IAP),
    (GCP, "iap", IAP),
    (GCP, "direct", None),
    ({**GCP, "ssh_access": "cidrs"}, "auto", None),
    ({**GCP, "ssh_access": "cidrs"}, "iap", IAP),
    (AWS, "auto", SSM),
    (AWS, "session-manager", SSM),
    ({**AWS, "ssh_access": "cidrs"}, "auto", None),
    # A stack deployed before ssh_access existed: connect directly, as before.
    ({k: v for k, v in GCP.items() if k != "ssh_access"}, "auto", None),
]


@pytest.mark.parametrize(("outputs", "tunnel", "expected"), CASES)
def test_proxy_command_follows_the_stack_and_the_setting(outputs, tunnel, expected):
    assert proxy_command(outputs, tunnel) == expected


@pytest.mark.parametrize(
    ("outputs", "tunnel", "key", "allowed"),
    [
        (GCP, "session-manager", "ssh_tunnel", "iap for a gcp stack"),
        (AWS, "iap", "ssh_tunnel", "session-manager for a aws stack"),
        (GCP, "ssm", "ssh_tunnel", "one of auto, direct, iap, session-manager"),
        ({**GCP, "vm_id": ""}, "auto", "vm_id", "present in the stack outputs"),
        ({k: v for k, v in AWS.items() if k != "region"}, "auto", "region", "present"),
    ],
)
def test_a_tunnel_that_cannot_be_built_is_refused_naming_what_is_missing(
    outputs, tunnel, key, allowed
):
    with pytest.raises(StackAccessError) as raised:
        proxy_command(outputs, tunnel)
    assert raised.value.key == key
    assert allowed in raised.value.allowed


def test_server_settings_come_from_the_stack_and_empty_ones_are_left_to_defaults():
    letsencrypt = {
        **GCP,
        "tls_mode": "letsencrypt",
        "domain": "mlflow.example.com",
        "acme_email": "ops@example.com",
        "mlflow_version": "3.18.0",
    }
    assert server_settings(letsencrypt) == {
        "mlflow_version": "3.18.0",
        "tls_mode": "letsencrypt",
        "domain": "mlflow.example.com",
        "acme_email": "ops@example.com",
        "db_max_connections": 50,
    }
    assert server_settings(GCP) == {
        "mlflow_version": "3.17.2",
        "tls_mode": "self-signed",
        "db_max_connections": 50,
    }
    assert server_settings({"cloud": "gcp"}) == {}
    # A class the stack does not know the limit of: bootstrap keeps its own default.
    assert server_settings({**AWS, "db_max_connections": 0}) == {
        "mlflow_version": "3.17.2",
        "tls_mode": "self-signed",
    }


@pytest.mark.parametrize("limit", ["50", 50.0, True, -1, None])
def test_a_connection_limit_that_is_not_a_whole_number_is_refused(limit):
    outputs = {**AWS, "db_max_connections": limit}
    if limit is None:
        assert "db_max_connections" not in server_settings(outputs)
        return
    with pytest.raises(StackAccessError) as raised:
        server_settings(outputs)
    assert (raised.value.key, raised.value.value) == ("db_max_connections", limit)


def test_operator_settings_win_and_ssh_tunnel_is_consumed():
    overrides = stack_overrides(AWS, {"ssh_key_file": "/k", "mlflow_version": "3.16.0"})
    assert overrides == {
        "mlflow_version": "3.16.0",
        "tls_mode": "self-signed",
        "db_max_connections": 112,
        "ssh_proxy_command": SSM,
        "ssh_key_file": "/k",
    }
    own = stack_overrides(GCP, {"ssh_proxy_command": "my-jump %h"})
    assert own["ssh_proxy_command"] == "my-jump %h"
    assert "ssh_proxy_command" not in stack_overrides(GCP, {"ssh_tunnel": "direct"})


@pytest.mark.parametrize("outputs", [GCP, AWS], ids=["gcp", "aws"])
def test_the_overrides_build_a_deployment_with_todays_settings_module(outputs):
    deployment = deployment_from_outputs(outputs, stack_overrides(outputs))
    assert deployment.ssh_proxy_command == (IAP if outputs is GCP else SSM)
    assert deployment.mlflow_version == "3.17.2"
    # The stack's connection limit reaches bootstrap as an integer setting it accepts.
    assert deployment.db_max_connections == (50 if outputs is GCP else 112)


def test_a_letsencrypt_stack_is_bootstrapped_with_letsencrypt_and_its_pinned_version():
    outputs = {
        **AWS,
        "host": "mlflow.example.com",
        "tracking_url": "https://mlflow.example.com",
        "tls_mode": "letsencrypt",
        "domain": "mlflow.example.com",
        "acme_email": "ops@example.com",
        "mlflow_version": "3.18.0",
    }
    deployment = deployment_from_outputs(outputs, stack_overrides(outputs))
    assert (deployment.tls_mode, deployment.domain, deployment.acme_email) == (
        "letsencrypt",
        "mlflow.example.com",
        "ops@example.com",
    )
    assert deployment.mlflow_version == "3.18.0"
