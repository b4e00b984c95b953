"""IAM and bucket policy documents, shared by the stack, the doctor and the tests.

Pure functions of names (no pulumi import), so the moto-backed tests attach exactly
the policy the stack gives the VM's role and prove what it allows and denies.
"""

from __future__ import annotations

SSM_CORE_POLICY = "policy/AmazonSSMManagedInstanceCore"


def artifact_access_policy(bucket: str, prefix: str, partition: str = "aws") -> dict:
    """Object read/write/delete under ``bucket/prefix/`` and listing of that prefix only.

    Multipart uploads (boto3's for any large upload; MLflow's server for a client's
    presigned multipart upload: ``S3ArtifactRepository.create_multipart_upload``,
    ``complete_multipart_upload``, ``abort_multipart_upload``): initiating, uploading a
    part and completing need ``s3:PutObject``; aborting needs its own
    ``s3:AbortMultipartUpload`` (Amazon S3 User Guide, "Multipart upload API and
    permissions"). ``s3:ListMultipartUploadParts`` is not granted: neither calls
    ``ListParts``.
    """
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ArtifactObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": [f"{bucket_arn}/{prefix}/*"],
            },
            {
                "Sid": "ArtifactListing",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn],
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
            },
        ],
    }


def tls_only_bucket_policy(bucket: str, partition: str = "aws") -> dict:
    """Deny every request to the bucket that does not arrive over TLS."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def ec2_trust_policy() -> dict:
    """Only EC2 instances may assume the VM's role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
