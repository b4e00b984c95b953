"""The doctor against a real S3 API: moto in server mode, with IAM policies enforced.

Measured on moto 5.2: it enforces identity policies on S3 object operations once
``/moto-api/reset-auth`` (INITIAL_NO_AUTH_ACTION_COUNT) is set, matching Resource
ARNs; it ignores condition operators other than StringEquals, so the ListBucket
``s3:prefix`` condition is not enforced and the doctor does not rely on it. Moto
also evaluates bucket policies on object operations with the same condition
engine, so the TLS-only Deny (a Bool condition) denies every object request there:
the probe tests run on a bucket without that policy, the settings checks with it.
Some bucket-level reads (GetPublicAccessBlock) are not authorized by moto at all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from invoke import Context
from invoke.exceptions import Exit
from mlflow.entities.multipart_upload import MultipartUploadPart

from provisioning import aws_doctor
from provisioning.doctor_tasks import doctor
from stacks import contract
from stacks.aws.policies import artifact_access_policy, tls_only_bucket_policy
from stacks.aws.settings import ARTIFACTS_PREFIX
from tests.localcloud.procs import die_with_parent

REGION = "us-east-1"
ALL_BLOCKS = dict.fromkeys(aws_doctor.PUBLIC_ACCESS_FLAGS, True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _moto_api(endpoint: str, path: str, body: bytes) -> None:
    request = urllib.request.Request(  # noqa: S310 (the local moto endpoint)
        f"{endpoint}/moto-api/{path}", data=body, headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 (127.0.0.1 only)


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto_server on a free 127.0.0.1 port, stopped by its PID afterwards."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Stopped with the test run even when pytest itself is killed.
        preexec_fn=die_with_parent(signal.SIGTERM),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).close()  # noqa: S310
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _session(keys: dict) -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        region_name=REGION,
    )


class World:
    """IAM users standing in for an operator and for the VM's role, and one bucket."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.bucket = f"mlflow-doctor-{uuid.uuid4().hex[:8]}"
        bootstrap = boto3.session.Session(
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", region_name=REGION
        )
        iam = bootstrap.client("iam", endpoint_url=endpoint)
        admin_policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        self.keys = {
            "operator": self._user(iam, "operator", admin_policy),
            # Exactly the policy the stack attaches to the VM's role.
            "mlflow-vm": self._user(
                iam, "mlflow-vm", artifact_access_policy(self.bucket, ARTIFACTS_PREFIX)
            ),
            "elsewhere": self._user(
                iam, "elsewhere", artifact_access_policy(self.bucket, "other-prefix")
            ),
        }
        self.operator = _session(self.keys["operator"])
        self.vm = _session(self.keys["mlflow-vm"])
        self.elsewhere = _session(self.keys["elsewhere"])

    @staticmethod
    def _user(iam, name: str, policy: dict) -> dict:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="access", PolicyDocument=json.dumps(policy))
        return iam.create_access_key(UserName=name)["AccessKey"]

    def s3(self, session: boto3.session.Session):
        return session.client(
            "s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"})
        )

    @property
    def destination(self) -> str:
        return f"s3://{self.bucket}/{ARTIFACTS_PREFIX}"


@pytest.fixture(scope="module")
def world(moto_endpoint):
    """Users created while moto accepts anything; then every request is checked by IAM."""
    created = World(moto_endpoint)
    _moto_api(moto_endpoint, "reset-auth", b"0")
    try:
        yield created
    finally:
        _moto_api(moto_endpoint, "reset-auth", b"inf")


@pytest.fixture
def bucket(world):
    """The stack's bucket as `pulumi up` leaves it; emptied and removed afterwards."""
    s3 = world.s3(world.operator)
    s3.create_bucket(Bucket=world.bucket)
    s3.put_public_access_block(Bucket=world.bucket, PublicAccessBlockConfiguration=ALL_BLOCKS)
    s3.put_bucket_policy(
        Bucket=world.bucket, Policy=json.dumps(tls_only_bucket_policy(world.bucket))
    )
    yield s3
    s3.delete_bucket_policy(Bucket=world.bucket)
    for item in s3.list_objects_v2(Bucket=world.bucket).get("Contents", []):
        s3.delete_object(Bucket=world.bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=world.bucket)


@pytest.fixture
def probe_bucket(bucket, world):
    """The bucket without the TLS-only policy, which moto would apply to every request."""
    bucket.delete_bucket_policy(Bucket=world.bucket)
    return bucket


def _remaining(s3, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


pytestmark = [pytest.mark.service, pytest.mark.filterwarnings("error::DeprecationWarning")]


def test_bucket_as_deployed_passes_the_settings_checks(bucket, world):
    report = aws_doctor.run_doctor(
        world.destination, endpoint_url=world.endpoint, session=world.operator, probe=False
    )
    assert report == [
        f"ok   bucket {world.bucket} exists",
        f"ok   bucket {world.bucket} blocks public access (all four settings on)",
        f"ok   bucket {world.bucket} denies requests without TLS",
    ]


def test_vm_policy_writes_reads_and_deletes_its_probe_and_is_denied_outside(probe_bucket, world):
    report = aws_doctor.run_doctor(
        world.destination, endpoint_url=world.endpoint, probe_session=world.vm, bucket_checks=False
    )
    assert report[0].startswith(f"ok   wrote, read, listed and deleted {ARTIFACTS_PREFIX}/")
    assert report[1] == f"ok   writing outside {ARTIFACTS_PREFIX}/ is denied"
    assert _remaining(probe_bucket, world.bucket) == []


def test_the_stack_policy_is_really_enforced_by_moto(probe_bucket, world):
    """The denials the doctor reports come from the policy, not from a stub."""
    vm = world.s3(world.vm)
    probe_bucket.put_object(Bucket=world.bucket, Key="elsewhere/secret", Body=b"x")
    vm.put_object(Bucket=world.bucket, Key=f"{ARTIFACTS_PREFIX}/run/model.pkl", Body=b"ok")
    assert (
        vm.get_object(Bucket=world.bucket, Key=f"{ARTIFACTS_PREFIX}/run/model.pkl")["Body"].read()
        == b"ok"
    )
    denied = {
        "put elsewhere": lambda: vm.put_object(Bucket=world.bucket, Key="elsewhere/x", Body=b"x"),
        "get elsewhere": lambda: vm.get_object(Bucket=world.bucket, Key="elsewhere/secret"),
        "delete elsewhere": lambda: vm.delete_object(Bucket=world.bucket, Key="elsewhere/secret"),
        "put sibling": lambda: vm.put_object(
            Bucket=world.bucket, Key=f"{ARTIFACTS_PREFIX}-sibling/x", Body=b"x"
        ),
        "change settings": lambda: vm.delete_public_access_block(Bucket=world.bucket),
    }
    for label, call in denied.items():
        with pytest.raises(ClientError, match="AccessDenied|403") as raised:
            call()
            pytest.fail(f"{label} was allowed")
        assert raised.value.response["Error"]["Code"] in ("AccessDenied", "403")
    assert "elsewhere/secret" in _remaining(probe_bucket, world.bucket)


def test_credentials_broader_than_the_prefix_fail_the_outside_check(probe_bucket, world):
    with pytest.raises(aws_doctor.DoctorError) as raised:
        aws_doctor.run_doctor(
            world.destination,
            endpoint_url=world.endpoint,
            session=world.operator,
            bucket_checks=False,
        )
    error = raised.value
    assert error.bucket == world.bucket
    assert error.operation.startswith("PutObject .mlflow-kit-doctor-outside-prefix/")
    assert f"may write outside {ARTIFACTS_PREFIX}/" in error.problem
    assert "VM's credentials" in error.fix
    assert _remaining(probe_bucket, world.bucket) == []  # the probe cleaned up after itself


def test_a_role_without_the_prefix_fails_on_put_with_the_policy_to_restore(probe_bucket, world):
    with pytest.raises(aws_doctor.DoctorError) as raised:
        aws_doctor.run_doctor(
            world.destination,
            endpoint_url=world.endpoint,
            probe_session=world.elsewhere,
            bucket_checks=False,
        )
    error = raised.value
    assert error.operation.startswith(f"PutObject {ARTIFACTS_PREFIX}/.mlflow-kit-doctor/")
    assert "access denied" in error.problem
    assert f"arn:aws:s3:::{world.bucket}/{ARTIFACTS_PREFIX}/*" in error.fix
    assert "pulumi up" in error.fix


def test_missing_bucket_is_reported_with_the_fix(world):
    with pytest.raises(aws_doctor.DoctorError) as raised:
        aws_doctor.run_doctor(
            f"s3://mlflow-doctor-absent/{ARTIFACTS_PREFIX}",
            endpoint_url=world.endpoint,
            session=world.operator,
        )
    error = raised.value
    assert (error.bucket, error.operation) == ("mlflow-doctor-absent", "HeadBucket")
    assert "does not exist" in error.problem
    assert "pulumi up" in error.fix
    assert "mlflow-doctor-absent" in str(error) and "HeadBucket" in str(error)


@pytest.mark.parametrize(
    "off", [("BlockPublicPolicy",), ("BlockPublicAcls", "RestrictPublicBuckets"), "all"]
)
def test_public_access_blocks_off_are_named(bucket, world, off):
    if off == "all":
        bucket.delete_public_access_block(Bucket=world.bucket)
        off = aws_doctor.PUBLIC_ACCESS_FLAGS
    else:
        config = {**ALL_BLOCKS, **dict.fromkeys(off, False)}
        bucket.put_public_access_block(Bucket=world.bucket, PublicAccessBlockConfiguration=config)
    with pytest.raises(aws_doctor.DoctorError) as raised:
        aws_doctor.run_doctor(
            world.destination, endpoint_url=world.endpoint, session=world.operator
        )
    error = raised.value
    assert (error.bucket, error.operation) == (world.bucket, "GetPublicAccessBlock")
    assert error.problem == "public access blocks are off: " + ", ".join(off)
    assert "put-public-access-block" in error.fix


def test_missing_tls_policy_is_reported(bucket, world):
    bucket.delete_bucket_policy(Bucket=world.bucket)
    with pytest.raises(aws_doctor.DoctorError) as raised:
        aws_doctor.run_doctor(
            world.destination, endpoint_url=world.endpoint, session=world.operator
        )
    assert raised.value.operation == "GetBucketPolicy"
    assert "aws:SecureTransport" in raised.value.problem


# -- the fab task, through the real pulumi_cli.stack_outputs and a stand-in CLI --


@pytest.fixture
def fab_env(world, tmp_path, monkeypatch):
    """A stand-in `pulumi` printing a recorded output document; profiles; AWS_ENDPOINT_URL."""
    outputs = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "stack-output-aws.json").read_text()
    )
    outputs[contract.ARTIFACTS_DESTINATION] = world.destination
    document = tmp_path / "outputs.json"
    document.write_text(json.dumps(outputs))
    stand_in = tmp_path / "bin" / "pulumi"
    stand_in.parent.mkdir()
    stand_in.write_text(f"#!/bin/sh\nexec cat {document}\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "".join(
            f"[{name}]\naws_access_key_id = {keys['AccessKeyId']}\n"
            f"aws_secret_access_key = {keys['SecretAccessKey']}\n"
            for name, keys in world.keys.items()
        )
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # boto3 reads the endpoint from the environment by itself.
    monkeypatch.setenv("AWS_ENDPOINT_URL", world.endpoint)
    return document


def test_fab_doctor_checks_the_bucket_settings_from_stack_outputs(bucket, fab_env, capsys, world):
    doctor(Context(), stack="aws-dev", profile="operator", skip_probe=True)
    printed = capsys.readouterr().out
    assert f"doctor: aws-dev: {world.destination}" in printed
    assert "denies requests without TLS" in printed


def test_fab_doctor_probes_with_the_vm_profile(probe_bucket, fab_env, capsys):
    doctor(Context(), stack="aws-dev", probe_profile="mlflow-vm", probe_only=True)
    assert "is denied" in capsys.readouterr().out


def test_fab_doctor_exits_1_naming_bucket_operation_and_fix(bucket, fab_env, world):
    bucket.delete_public_access_block(Bucket=world.bucket)
    with pytest.raises(Exit) as raised:
        doctor(Context(), stack="aws-dev", profile="operator", skip_probe=True)
    assert raised.value.code == 1
    message = str(raised.value.message)
    assert world.bucket in message and "GetPublicAccessBlock" in message and "fix:" in message


def test_fab_doctor_refuses_a_gcp_stack(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "provisioning.pulumi_cli.stack_outputs", lambda stack: {contract.CLOUD: "gcp"}
    )
    with pytest.raises(Exit) as raised:
        doctor(Context(), stack="gcp-dev")
    assert raised.value.code == 2


def test_the_stack_policy_lets_mlflows_server_run_and_abort_a_multipart_upload(
    probe_bucket, world, monkeypatch, tmp_path
):
    """MLflow's own S3 code as the server runs it for a client's large upload, with the
    VM's keys: create, parts, complete; and abort, which needs its own action
    (s3:AbortMultipartUpload), only under the artifact prefix.

    The client PUTs each part to a URL the server presigned. moto 5.2 answers a
    presigned request with a 500 once IAM is enforced (moto/iam/access_control.py reads
    only the Authorization header), so the parts go up header-signed with the same
    keys: S3 checks the same action, s3:PutObject, for either (Amazon S3 User Guide,
    "Multipart upload API and permissions"; a presigned URL carries its signer's rights).
    """
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", world.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    keys = world.keys["mlflow-vm"]
    repo = S3ArtifactRepository(
        f"{world.destination}/run-1/artifacts",
        access_key_id=keys["AccessKeyId"],
        secret_access_key=keys["SecretAccessKey"],
    )
    vm = world.s3(world.vm)
    key = f"{ARTIFACTS_PREFIX}/run-1/artifacts/model.bin"
    local = tmp_path / "model.bin"
    first = 5 * 1024 * 1024  # S3's smallest part but the last
    local.write_bytes(b"a" * first + b"b")
    created = repo.create_multipart_upload(str(local), num_parts=2)
    parts = []
    for credential, body in zip(created.credentials, [b"a" * first, b"b"], strict=True):
        assert f"uploadId={created.upload_id}" in credential.url
        etag = vm.upload_part(
            Bucket=world.bucket,
            Key=key,
            UploadId=created.upload_id,
            PartNumber=credential.part_number,
            Body=body,
        )["ETag"]
        parts.append(MultipartUploadPart(credential.part_number, etag))
    repo.complete_multipart_upload(str(local), created.upload_id, parts)
    assert probe_bucket.head_object(Bucket=world.bucket, Key=key)["ContentLength"] == first + 1

    abandoned = repo.create_multipart_upload(str(local), num_parts=1)
    repo.abort_multipart_upload(str(local), abandoned.upload_id)
    listed = probe_bucket.list_multipart_uploads(Bucket=world.bucket).get("Uploads", [])
    assert abandoned.upload_id not in {u["UploadId"] for u in listed}

    outside = probe_bucket.create_multipart_upload(Bucket=world.bucket, Key="elsewhere/big")
    with pytest.raises(ClientError, match="AccessDenied|403"):
        vm.abort_multipart_upload(
            Bucket=world.bucket, Key="elsewhere/big", UploadId=outside["UploadId"]
        )
    probe_bucket.abort_multipart_upload(
        Bucket=world.bucket, Key="elsewhere/big", UploadId=outside["UploadId"]
    )
