"""Fabric tasks that check a deployed stack (see provisioning/tasks.py).

Exit codes: 0 every check passed; 1 a check failed (the message names the bucket,
the S3 operation and the fix); 2 refused or bad arguments, nothing was checked.
"""

from __future__ import annotations

import boto3
from invoke import task
from invoke.exceptions import Exit

from provisioning import aws_doctor, pulumi_cli
from stacks import contract

FAILED, REFUSED = 1, 2


@task(
    help={
        "stack": "the Pulumi stack to check, e.g. aws-dev",
        "endpoint-url": "S3 endpoint (default: boto3's own, or $AWS_ENDPOINT_URL)",
        "region": "AWS region of the bucket (default: from the profile or $AWS_REGION)",
        "profile": "AWS profile for the bucket settings checks (default credentials if unset)",
        "probe-profile": "AWS profile holding the VM role's permissions for the probe",
        "skip-probe": "only check the bucket settings",
        "probe-only": "only run the probe (e.g. with the VM's own credentials)",
    }
)
def doctor(
    c,
    stack,
    endpoint_url=None,
    region=None,
    profile=None,
    probe_profile=None,
    skip_probe=False,
    probe_only=False,
):
    """Check a deployed AWS stack's artifact store from its outputs.

    Reads the stack's artifacts_destination (s3://bucket/prefix), then checks that
    the bucket exists, has all four public access blocks on and denies requests
    without TLS; and, with the probe credentials, writes, reads, lists and deletes
    a probe object under the prefix and is denied when writing outside it. Give
    the VM role's permissions to the probe (--probe-profile, or run
    `python -m provisioning.aws_doctor --probe-only s3://...` on the VM): broader
    credentials fail the outside-the-prefix check on purpose.

    Example: fab doctor --stack aws-dev --probe-profile mlflow-vm
    """
    if skip_probe and probe_only:
        raise Exit("doctor: --skip-probe and --probe-only exclude each other", code=REFUSED)
    try:
        outputs = pulumi_cli.stack_outputs(stack)
    except pulumi_cli.PulumiError as error:
        raise Exit(f"doctor: cannot read the outputs of {stack}: {error}", code=REFUSED) from error
    cloud = outputs.get(contract.CLOUD)
    if cloud != "aws":
        raise Exit(f"doctor: {stack} is a {cloud!r} stack; doctor checks AWS stacks", code=REFUSED)
    destination = outputs.get(contract.ARTIFACTS_DESTINATION)
    if not destination:
        raise Exit(f"doctor: {stack} has no {contract.ARTIFACTS_DESTINATION} output", code=REFUSED)

    session = boto3.session.Session(profile_name=profile) if profile else None
    probe_session = boto3.session.Session(profile_name=probe_profile) if probe_profile else None
    print(f"doctor: {stack}: {destination}")
    try:
        report = aws_doctor.run_doctor(
            destination,
            endpoint_url=endpoint_url,
            session=session,
            probe_session=probe_session,
            region=region,
            probe=not skip_probe,
            bucket_checks=not probe_only,
        )
    except aws_doctor.DoctorError as error:
        raise Exit(f"FAIL {error}", code=FAILED) from error
    for line in report:
        print(line)
