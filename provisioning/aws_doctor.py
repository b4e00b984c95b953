"""Post-deploy check of an AWS stack's artifact store, with boto3.

Two halves, because they need different credentials:

* ``check_bucket`` reads the bucket's configuration (exists, all four public
  access blocks on, a policy denying plain HTTP). It needs an operator's read
  access to the bucket settings, which the VM's role deliberately lacks.
* ``probe_prefix`` writes, reads, lists and deletes a probe object under the
  artifact prefix, and checks that writing outside the prefix is denied. Run it
  with the VM's credentials (on the VM, ``python -m provisioning.aws_doctor
  --probe-only s3://...``, or with a profile holding the same policy): an
  operator's broader credentials fail the outside-the-prefix check on purpose.

The endpoint comes from ``endpoint_url`` or boto3's own ``AWS_ENDPOINT_URL``, so
the same code runs against AWS and against moto in the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

PROBE_DIR = ".mlflow-kit-doctor"
PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)
_DENIED = ("AccessDenied", "403", "Forbidden", "AllAccessDisabled")
_MISSING = ("NoSuchBucket", "404", "NotFound")


class DoctorError(RuntimeError):
    """A check failed: names the bucket, the S3 operation, what is wrong and the fix."""

    def __init__(self, bucket: str, operation: str, problem: str, fix: str):
        self.bucket, self.operation, self.problem, self.fix = bucket, operation, problem, fix
        super().__init__(f"bucket {bucket!r}, {operation}: {problem}\n  fix: {fix}")


@dataclass(frozen=True)
class Destination:
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_destination(uri: str) -> Destination:
    """``s3://bucket/prefix`` (the stack's artifacts_destination) as bucket and prefix."""
    scheme, _, rest = uri.partition("://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if scheme != "s3" or not bucket or not prefix:
        raise DoctorError(
            bucket or "?",
            "parse artifacts_destination",
            f"{uri!r} is not s3://<bucket>/<prefix>",
            "check the stack's artifacts_destination output (`pulumi stack output`)",
        )
    return Destination(bucket, prefix)


def s3_client(
    session: boto3.session.Session | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
):
    """An S3 client that fails fast; path-style addressing for a custom endpoint."""
    config = Config(
        connect_timeout=5,
        read_timeout=15,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = session or boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _call(bucket: str, operation: str, fix: str, call, *args, **kwargs):
    """Run one S3 call; any failure becomes a DoctorError naming bucket and operation."""
    try:
        return call(*args, **kwargs)
    except ClientError as error:
        code = _code(error)
        if code in _MISSING and operation in ("HeadBucket", "GetPublicAccessBlock"):
            raise DoctorError(
                bucket,
                operation,
                f"the bucket does not exist ({code})",
                "run `pulumi up` for the stack, or check its artifacts_destination output",
            ) from error
        if code in _DENIED:
            raise DoctorError(bucket, operation, f"access denied ({code})", fix) from error
        raise DoctorError(bucket, operation, f"{code}: {error}", fix) from error
    except BotoCoreError as error:
        raise DoctorError(
            bucket,
            operation,
            f"{type(error).__name__}: {error}",
            "check AWS credentials, region and endpoint (AWS_ENDPOINT_URL / --endpoint-url)",
        ) from error


def check_bucket(s3, destination: Destination) -> list[str]:
    """The bucket exists, blocks all public access and denies requests without TLS."""
    bucket = destination.bucket
    operator_fix = "run the doctor with credentials that may read the bucket's settings"
    _call(bucket, "HeadBucket", operator_fix, s3.head_bucket, Bucket=bucket)
    report = [f"ok   bucket {bucket} exists"]

    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as error:
        if _code(error) != "NoSuchPublicAccessBlockConfiguration":
            _call(bucket, "GetPublicAccessBlock", operator_fix, _raise, error)
        block = {}
    off = [flag for flag in PUBLIC_ACCESS_FLAGS if not block.get(flag)]
    if off:
        raise DoctorError(
            bucket,
            "GetPublicAccessBlock",
            "public access blocks are off: " + ", ".join(off),
            "run `pulumi up` for the stack (it sets all four), or "
            f"`aws s3api put-public-access-block --bucket {bucket} "
            "--public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,"
            "BlockPublicPolicy=true,RestrictPublicBuckets=true`",
        )
    report.append(f"ok   bucket {bucket} blocks public access (all four settings on)")

    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as error:
        if _code(error) != "NoSuchBucketPolicy":
            _call(bucket, "GetBucketPolicy", operator_fix, _raise, error)
        policy = {"Statement": []}
    if not denies_insecure_transport(policy):
        raise DoctorError(
            bucket,
            "GetBucketPolicy",
            "no bucket policy statement denies requests without TLS (aws:SecureTransport false)",
            "run `pulumi up` for the stack: it attaches the TLS-only bucket policy",
        )
    report.append(f"ok   bucket {bucket} denies requests without TLS")
    return report


def denies_insecure_transport(policy: dict) -> bool:
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for statement in statements:
        condition = statement.get("Condition", {}).get("Bool", {})
        if (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and str(condition.get("aws:SecureTransport", "")).lower() == "false"
        ):
            return True
    return False


def probe_prefix(s3, destination: Destination) -> list[str]:
    """Write, read, list and delete a probe under the prefix; writing outside is denied."""
    bucket, prefix = destination.bucket, destination.prefix
    token = uuid.uuid4().hex
    key = f"{prefix}/{PROBE_DIR}/{token}"
    role_fix = (
        f"the VM's role needs s3:PutObject/GetObject/DeleteObject on "
        f"arn:aws:s3:::{bucket}/{prefix}/* and s3:ListBucket with prefix {prefix}/; "
        "`pulumi up` restores the stack's role policy"
    )
    _call(bucket, f"PutObject {key}", role_fix, s3.put_object, Bucket=bucket, Key=key, Body=token)
    try:
        body = _call(bucket, f"GetObject {key}", role_fix, s3.get_object, Bucket=bucket, Key=key)
        if body["Body"].read().decode() != token:
            raise DoctorError(
                bucket, f"GetObject {key}", "read back different content", "check the bucket"
            )
        listed = _call(
            bucket,
            f"ListObjectsV2 prefix={prefix}/{PROBE_DIR}/",
            role_fix,
            s3.list_objects_v2,
            Bucket=bucket,
            Prefix=f"{prefix}/{PROBE_DIR}/",
        )
        if key not in [item["Key"] for item in listed.get("Contents", [])]:
            raise DoctorError(
                bucket, "ListObjectsV2", f"the probe {key} is not listed", "check the bucket"
            )
    finally:
        _call(bucket, f"DeleteObject {key}", role_fix, s3.delete_object, Bucket=bucket, Key=key)
    report = [f"ok   wrote, read, listed and deleted {key}"]

    outside = f"{PROBE_DIR}-outside-prefix/{token}"
    try:
        s3.put_object(Bucket=bucket, Key=outside, Body=token)
    except ClientError as error:
        if _code(error) not in _DENIED:
            raise DoctorError(
                bucket, f"PutObject {outside}", f"expected AccessDenied, got {_code(error)}", ""
            ) from error
    else:
        s3.delete_object(Bucket=bucket, Key=outside)
        raise DoctorError(
            bucket,
            f"PutObject {outside}",
            f"these credentials may write outside {prefix}/ (the probe was written and removed)",
            "run the probe with the VM's credentials; if it ran with them, the VM's role has "
            f"more S3 access than arn:aws:s3:::{bucket}/{prefix}/*: remove the extra policies",
        )
    report.append(f"ok   writing outside {prefix}/ is denied")
    return report


def _raise(error: Exception):
    raise error


def run_doctor(
    artifacts_destination: str,
    *,
    endpoint_url: str | None = None,
    session: boto3.session.Session | None = None,
    probe_session: boto3.session.Session | None = None,
    region: str | None = None,
    probe: bool = True,
    bucket_checks: bool = True,
) -> list[str]:
    """Every check for ``artifacts_destination``; raises DoctorError on the first failure."""
    destination = parse_destination(artifacts_destination)
    report = []
    if bucket_checks:
        report += check_bucket(s3_client(session, endpoint_url, region), destination)
    if probe:
        client = s3_client(probe_session or session, endpoint_url, region)
        report += probe_prefix(client, destination)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m provisioning.aws_doctor [--probe-only] s3://bucket/prefix`` (e.g. on the VM)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts_destination")
    parser.add_argument("--endpoint-url")
    parser.add_argument("--region")
    parser.add_argument("--probe-only", action="store_true", help="skip the bucket settings")
    args = parser.parse_args(argv)
    try:
        for line in run_doctor(
            args.artifacts_destination,
            endpoint_url=args.endpoint_url,
            region=args.region,
            bucket_checks=not args.probe_only,
        ):
            print(line)
    except DoctorError as error:
        print(f"FAIL {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
