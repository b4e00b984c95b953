"""No deprecated provider resource or argument in the programs' own code, either cloud."""

from __future__ import annotations

import inspect
import warnings

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pytest
import stack_harness
from deprecations import marked, replayed
from stack_harness import RecordingMocks, config

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
FIREWALL = "gcp:compute/firewall:Firewall"
LETSENCRYPT = {
    "tlsMode": "letsencrypt",
    "domain": "mlflow.example.com",
    "acmeEmail": "ops@example.com",
}

GROUP = {"topology": "group", "domain": "mlflow.example.com", "sshAllowedCidrs": None}
PROVIDED = dict(
    zip(
        ("groupCertificatePem", "groupCertificateKeyPem"),
        stack_harness.certificate_pair(),
        strict=True,
    )
)

# (case id, cloud, environment, overrides)
VARIANTS = [
    ("gcp-dev", "gcp", "dev", LETSENCRYPT),
    ("gcp-test", "gcp", "test", LETSENCRYPT),
    ("gcp-prod", "gcp", "prod", LETSENCRYPT),
    ("aws-dev", "aws", "dev", {}),
    ("aws-test", "aws", "test", {}),
    ("aws-prod", "aws", "prod", {}),
    ("aws-session-manager", "aws", "dev", {"sshAllowedCidrs": None}),
    ("gcp-group", "gcp", "prod", GROUP),
    ("gcp-group-provided", "gcp", "dev", {**GROUP, **PROVIDED}),
    ("aws-group", "aws", "prod", GROUP),
    ("aws-group-provided", "aws", "dev", {**GROUP, **PROVIDED}),
    (
        "aws-letsencrypt",
        "aws",
        "dev",
        {
            **LETSENCRYPT,
            "httpsAllowedCidrs": ["203.0.113.0/24", "198.51.100.0/24"],
            "awsBucketExpireDays": "365",
        },
    ),
]


@pytest.mark.parametrize(
    ("cloud", "environment", "overrides"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_stack_uses_no_deprecated_resource_or_argument(cloud, environment, overrides):
    run = stack_harness.run(config(cloud, environment, **overrides))
    assert [p for r in run.resources for p in marked(r.typ, r.inputs)] == []
    assert replayed(run.resources) == []


def _declare(build) -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="probe", stack="probe", preview=False)
    pulumi.runtime.test(lambda: build().urn)()
    return mocks


def test_the_markers_catch_a_deprecated_argument_and_resource():
    mocks = _declare(lambda: aws.s3.Bucket("probe", acl="private"))
    assert marked(mocks.resources[0].typ, mocks.resources[0].inputs) == [
        "aws:s3/bucket:Bucket.acl: acl is deprecated"
    ]
    mocks = _declare(lambda: aws.s3.BucketV2("probe"))
    (problem,) = marked(mocks.resources[0].typ, mocks.resources[0].inputs)
    assert "BucketV2 is deprecated" in problem


def test_keyword_deprecated_arguments_warn_nothing_which_is_why_the_checks_exist():
    """Measured on pulumi-aws 7.51: only the *Args class warns, the keyword form does not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _declare(lambda: aws.s3.Bucket("probe", acl="private"))
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    with pytest.raises(DeprecationWarning, match="acl is deprecated"):
        aws.s3.BucketArgs(acl="private")


def test_the_replay_catches_a_deprecated_argument():
    """The warning filter and the input replay each catch a deprecated argument."""
    with pytest.raises(DeprecationWarning, match="log_config"):
        gcp.compute.FirewallArgs(network="n", enable_logging=True)
    # The SDK no longer has the deprecated require_ssl at all: ssl_mode replaced it.
    assert (
        "require_ssl"
        not in inspect.signature(gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs).parameters
    )
    run = stack_harness.run(config("gcp", "dev"))
    rule = run.of_type(FIREWALL)[0]
    rule.inputs["enableLogging"] = True
    assert replayed([rule]) == [f"{FIREWALL} {rule.name}: Deprecated in favor of log_config"]
