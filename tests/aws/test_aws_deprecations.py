"""No deprecated pulumi_aws resource or argument in the stack's own code."""

from __future__ import annotations

import json
import warnings

import pulumi
import pulumi_aws as aws
import pytest
from aws_deprecations import deprecations
from aws_harness import RecordingMocks, config, run_stack

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

VARIANTS = {
    "dev": ("dev", {}),
    "test": ("test", {}),
    "prod": ("prod", {}),
    "session-manager": ("dev", {"sshAllowedCidrs": None}),
    "letsencrypt": (
        "dev",
        {
            "tlsMode": "letsencrypt",
            "domain": "mlflow.example.com",
            "acmeEmail": "ops@example.com",
            "httpsAllowedCidrs": json.dumps(["203.0.113.0/24", "198.51.100.0/24"]),
            "awsBucketExpireDays": "365",
        },
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_stack_uses_no_deprecated_resource_or_argument(variant):
    environment, overrides = VARIANTS[variant]
    run = run_stack(config(environment, **overrides))
    found = [p for r in run.mocks.resources for p in deprecations(r.typ, r.inputs)]
    assert found == []


def _declare(build) -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="probe", stack="probe", preview=False)
    pulumi.runtime.test(lambda: build().urn)()
    return mocks


def test_the_check_catches_a_deprecated_argument_and_resource():
    mocks = _declare(lambda: aws.s3.Bucket("probe", acl="private"))
    assert deprecations(mocks.resources[0].typ, mocks.resources[0].inputs) == [
        "aws:s3/bucket:Bucket.acl: acl is deprecated"
    ]
    mocks = _declare(lambda: aws.s3.BucketV2("probe"))
    (problem,) = deprecations(mocks.resources[0].typ, mocks.resources[0].inputs)
    assert "BucketV2 is deprecated" in problem


def test_keyword_deprecated_arguments_warn_nothing_which_is_why_the_check_exists():
    """Measured on pulumi-aws 7.51: only the *Args class warns, the keyword form does not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _declare(lambda: aws.s3.Bucket("probe", acl="private"))
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    with pytest.raises(DeprecationWarning, match="acl is deprecated"):
        aws.s3.BucketArgs(acl="private")
