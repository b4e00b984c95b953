"""Hostile configurations, both clouds: each refused before any resource is registered,
naming key, value and what is allowed, or accepted with every physical name valid."""

from __future__ import annotations

import pytest
import stack_harness
from physical_names import check_run
from stack_harness import RecordingMocks, config, public_key

from stacks.config import SettingError

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
P = "mlflow-server:"
ECDSA = public_key("ecdsa-sha2-nistp256")
DSA = public_key("ssh-dss")
MISMATCHED = "ssh-rsa " + stack_harness.SSH_KEY.split()[1]
LONG_STACK = "Ab_" + "x.y-" * 24 + "Z"  # 100 characters
#: topology group with what it needs: a domain, and no SSH CIDRs (IAP, Session Manager).
GROUP = {"topology": "group", "domain": "mlflow.example.com", "sshAllowedCidrs": None}
PEM, KEY = stack_harness.certificate_pair()
ROLE = "arn:aws:iam::123456789012:role/deploy"

# (case id, environment, overrides, stack name or None, refused: (key, value part, allowed part) or None)
COMMON = [
    (
        "malformed-cidr",
        "dev",
        {"httpsAllowedCidrs": ["10.0.0.300/24"]},
        None,
        (P + "httpsAllowedCidrs", "10.0.0.300/24", "CIDR"),
    ),
    (
        "host-bits-cidr",
        "dev",
        {"httpsAllowedCidrs": ["203.0.113.7/24"]},
        None,
        (P + "httpsAllowedCidrs", "203.0.113.7/24", "CIDR"),
    ),
    (
        "mixed-families",
        "dev",
        {"httpsAllowedCidrs": ["203.0.113.0/24", "2001:db8::/32"]},
        None,
        (P + "httpsAllowedCidrs", "2001:db8::/32", "IPv4"),
    ),
    (
        "ipv6-world-ssh",
        "dev",
        {"sshAllowedCidrs": ["::/0"]},
        None,
        (P + "sshAllowedCidrs", "::/0", "IPv4"),
    ),
    ("world-open-https", "dev", {"httpsAllowedCidrs": ["0.0.0.0/0"]}, None, None),
    (
        "no-https-cidrs",
        "dev",
        {"httpsAllowedCidrs": []},
        None,
        (P + "httpsAllowedCidrs", "[]", "non-empty"),
    ),
    (
        "cidrs-not-a-list",
        "dev",
        {"httpsAllowedCidrs": '"203.0.113.0/24"'},
        None,
        (P + "httpsAllowedCidrs", "203.0.113.0/24", "list of strings"),
    ),
    ("labels-not-a-map", "dev", {"labels": ["team"]}, None, (P + "labels", "team", "map")),
    (
        "label-name-uppercase",
        "dev",
        {"labels": {"Team": "ml"}},
        None,
        (P + "labels", "Team", "label names"),
    ),
    (
        "label-value-too-long",
        "dev",
        {"labels": {"team": "x" * 64}},
        None,
        (P + "labels", "x" * 64, "at most 63"),
    ),
    (
        "label-reserved",
        "dev",
        {"labels": {"mlflow-kit-stack": "x"}},
        None,
        (P + "labels", "mlflow-kit-stack", "reserved"),
    ),
    (
        "typo-project-key",
        "dev",
        {"httpAllowedCidrs": ["203.0.113.0/24"]},
        None,
        (P + "httpAllowedCidrs", "203.0.113.0/24", "did you mean httpsAllowedCidrs?"),
    ),
    (
        "typo-tls",
        "dev",
        {"tlsmode": "self-signed"},
        None,
        (P + "tlsmode", "self-signed", "did you mean tlsMode?"),
    ),
    (
        "expired-ttl",
        "test",
        {"expiresAt": "202001010000"},
        None,
        (P + "expiresAt", "202001010000", "in the future"),
    ),
    (
        "malformed-ttl",
        "test",
        {"expiresAt": "tomorrow"},
        None,
        (P + "expiresAt", "tomorrow", "YYYYMMDDhhmm"),
    ),
    (
        "test-without-ttl",
        "test",
        {"expiresAt": None},
        None,
        (P + "expiresAt", "None", "must expire"),
    ),
    (
        "dsa-key",
        "dev",
        {"sshPublicKeys": [DSA]},
        None,
        (P + "sshPublicKeys", "ssh-dss", "OpenSSH public keys"),
    ),
    (
        "key-type-contradicts-data",
        "dev",
        {"sshPublicKeys": [MISMATCHED]},
        None,
        (P + "sshPublicKeys", "ssh-rsa", "matches the key type"),
    ),
    ("no-keys", "dev", {"sshPublicKeys": []}, None, (P + "sshPublicKeys", "[]", "at least one")),
    (
        "user-root",
        "dev",
        {"sshUser": "root"},
        None,
        (P + "sshUser", "root", "other than root and mlflow"),
    ),
    (
        "user-mlflow",
        "dev",
        {"sshUser": "mlflow"},
        None,
        (P + "sshUser", "mlflow", "other than root"),
    ),
    (
        "user-uppercase",
        "dev",
        {"sshUser": "Admin"},
        None,
        (P + "sshUser", "Admin", "Linux user name"),
    ),
    (
        "letsencrypt-without-domain",
        "dev",
        {"tlsMode": "letsencrypt", "acmeEmail": "ops@example.com"},
        None,
        (P + "tlsMode", "letsencrypt", "domain"),
    ),
    (
        "domain-uppercase",
        "dev",
        {"domain": "MLflow.Example.com"},
        None,
        (P + "domain", "MLflow.Example.com", "lowercase DNS name"),
    ),
    (
        "domain-ip",
        "dev",
        {"domain": "203.0.113.10"},
        None,
        (P + "domain", "203.0.113.10", "no IP address"),
    ),
    ("bad-email", "dev", {"acmeEmail": "ops"}, None, (P + "acmeEmail", "ops", "email")),
    (
        "version-unpinned",
        "dev",
        {"mlflowVersion": "3.17"},
        None,
        (P + "mlflowVersion", "3.17", "X.Y.Z"),
    ),
    (
        "environment-unknown",
        "staging",
        {},
        None,
        (P + "environment", "staging", "dev, test, prod"),
    ),
    (
        "letsencrypt",
        "prod",
        {"tlsMode": "letsencrypt", "domain": "mlflow.example.com", "acmeEmail": "ops@example.com"},
        None,
        None,
    ),
    (
        "admin-password-short",
        "dev",
        {"adminPassword": "x" * 11},
        None,
        (P + "adminPassword", "[secret: 11 characters]", "at least 12 characters"),
    ),
    (
        "admin-password-two-lines",
        "dev",
        {"adminPassword": "first line..\nsecond"},
        None,
        (P + "adminPassword", "with a line break", "on one line"),
    ),
    (
        "admin-password-typo",
        "dev",
        {"adminPasword": "twelve chars!"},
        None,
        (P + "adminPasword", "twelve chars!", "did you mean adminPassword?"),
    ),
    ("admin-password-twelve", "prod", {"adminPassword": "!@#$%^&*() 'x"}, None, None),
    ("stack-mixed-case-dots", "dev", {}, "Team_A.Prod", None),
    ("stack-double-underscore", "prod", {}, "ml__prod", None),
    ("stack-100-characters", "test", {}, LONG_STACK, None),
    ("stack-a-dot", "dev", {}, ".", None),
    ("stack-a-hyphen", "prod", {}, "-", None),
    # --- topology ---
    (
        "topology-unknown",
        "dev",
        {"topology": "cluster"},
        None,
        (P + "topology", "cluster", "one of single, group"),
    ),
    (
        "topology-capitalised",
        "dev",
        {**GROUP, "topology": "Group"},
        None,
        (P + "topology", "Group", "one of single, group"),
    ),
    (
        "group-size-in-single",
        "dev",
        {"groupSize": "3"},
        None,
        (P + "groupSize", "3", "no groupSize with topology single"),
    ),
    (
        "group-certificate-in-single",
        "dev",
        {"groupCertificatePem": PEM, "groupCertificateKeyPem": KEY},
        None,
        (P + "groupCertificatePem", "BEGIN CERTIFICATE", "with topology single"),
    ),
    (
        "group-key-in-single-not-shown",
        "dev",
        {"groupCertificateKeyPem": KEY},
        None,
        (P + "groupCertificateKeyPem", "[secret]", "with topology single"),
    ),
    ("group-of-one", "dev", {**GROUP, "groupSize": "1"}, None, (P + "groupSize", "1", "2 to 10")),
    (
        "group-of-eleven",
        "dev",
        {**GROUP, "groupSize": "11"},
        None,
        (P + "groupSize", "11", "2 to 10"),
    ),
    (
        "group-size-words",
        "dev",
        {**GROUP, "groupSize": "two"},
        None,
        (P + "groupSize", "two", "whole number"),
    ),
    (
        "group-without-domain-or-certificate",
        "dev",
        {**GROUP, "domain": None},
        None,
        (P + "domain", "None", "groupCertificatePem and groupCertificateKeyPem"),
    ),
    (
        "group-certificate-without-key",
        "dev",
        {**GROUP, "groupCertificatePem": PEM},
        None,
        (P + "groupCertificateKeyPem", "None", "set together with groupCertificatePem"),
    ),
    (
        "group-key-without-certificate",
        "dev",
        {**GROUP, "groupCertificateKeyPem": KEY},
        None,
        (P + "groupCertificatePem", "None", "set together with groupCertificateKeyPem"),
    ),
    (
        "group-certificate-not-pem",
        "dev",
        {**GROUP, "groupCertificatePem": "mlflow.example.com.crt", "groupCertificateKeyPem": KEY},
        None,
        (P + "groupCertificatePem", "mlflow.example.com.crt", "PEM text of the certificate"),
    ),
    (
        "group-key-not-pem-not-shown",
        "dev",
        {**GROUP, "groupCertificatePem": PEM, "groupCertificateKeyPem": "hunter2 hunter2"},
        None,
        (P + "groupCertificateKeyPem", "[secret: not a PEM private key]", "private key"),
    ),
    (
        "group-letsencrypt",
        "dev",
        {**GROUP, "tlsMode": "letsencrypt", "acmeEmail": "ops@example.com"},
        None,
        (P + "tlsMode", "letsencrypt", "self-signed or provided with topology group"),
    ),
    (
        "group-ssh-cidrs",
        "dev",
        {**GROUP, "sshAllowedCidrs": ["198.51.100.0/28"]},
        None,
        (P + "sshAllowedCidrs", "198.51.100.0/28", "an empty list with topology group"),
    ),
    ("group-managed-certificate", "prod", GROUP, None, None),
    (
        "group-provided-certificate-no-domain",
        "dev",
        {**GROUP, "domain": None, "groupCertificatePem": PEM, "groupCertificateKeyPem": KEY},
        None,
        None,
    ),
    ("group-of-ten-long-stack", "test", {**GROUP, "groupSize": "10"}, LONG_STACK, None),
    ("group-mixed-case-stack", "dev", GROUP, "Team_A.Prod", None),
]
GCP = COMMON + [
    (
        "cross-region-zone",
        "dev",
        {"gcp:zone": "us-central1-a"},
        None,
        ("gcp:zone", "us-central1-a", "zone of region europe-west1"),
    ),
    ("region-malformed", "dev", {"gcp:region": "EU"}, None, ("gcp:region", "EU", "GCP region")),
    (
        "project-malformed",
        "dev",
        {"gcp:project": "My_Project"},
        None,
        ("gcp:project", "My_Project", "project ID"),
    ),
    (
        "bucket-location",
        "dev",
        {"gcpBucketLocation": "MARS"},
        None,
        (P + "gcpBucketLocation", "MARS", "multi-region"),
    ),
    (
        "disk-wrong-type",
        "dev",
        {"gcpBootDiskGb": "big"},
        None,
        (P + "gcpBootDiskGb", "big", "whole number"),
    ),
    (
        "backups-wrong-type",
        "dev",
        {"gcpDbBackups": "yes"},
        None,
        (P + "gcpDbBackups", "yes", "true or false"),
    ),
    (
        "typo-gcp-key",
        "dev",
        {"gcpMachinType": "e2-small"},
        None,
        (P + "gcpMachinType", "e2-small", "did you mean gcpMachineType?"),
    ),
    (
        "typo-provider-key",
        "dev",
        {"gcp:projct": "p"},
        None,
        ("gcp:projct", "p", "did you mean project?"),
    ),
    (
        "aws-key-on-gcp",
        "dev",
        {"aws:region": "eu-central-1"},
        None,
        ("aws:region", "eu-central-1", "no aws:* keys in a gcp stack"),
    ),
    (
        "public-subnet",
        "dev",
        {"gcpSubnetCidr": "8.8.8.0/24"},
        None,
        (P + "gcpSubnetCidr", "8.8.8.0/24", "private IPv4"),
    ),
    (
        "odd-custom-tier",
        "dev",
        {"gcpDbTier": "db-custom-3-7680"},
        None,
        (P + "gcpDbTier", "db-custom-3-7680", "even 2-96"),
    ),
    (
        "prod-without-backups",
        "prod",
        {"gcpDbBackups": "false"},
        None,
        (P + "gcpDbBackups", "False", "prod"),
    ),
    (
        "protected-test",
        "test",
        {"gcpDeletionProtection": "true"},
        None,
        (P + "gcpDeletionProtection", "True", "false in a test"),
    ),
    ("old-postgres", "dev", {"gcpDbVersion": "12"}, None, (P + "gcpDbVersion", "12", "14 to 18")),
    (
        "machine-type-injection",
        "dev",
        {"gcpMachineType": "e2-small; rm"},
        None,
        (P + "gcpMachineType", "e2-small; rm", "machine type"),
    ),
    ("ecdsa-on-gcp", "dev", {"sshPublicKeys": [ECDSA]}, None, None),
    (
        "group-zonal-database",
        "dev",
        {**GROUP, "gcpDbAvailability": "zonal"},
        None,
        (P + "gcpDbAvailability", "zonal", "regional with topology group"),
    ),
    (
        "group-shared-core-database",
        "test",
        {**GROUP, "gcpDbTier": "db-g1-small"},
        None,
        (P + "gcpDbTier", "db-g1-small", "a dedicated-core tier with topology group"),
    ),
    (
        "impersonation",
        "dev",
        {
            "gcp:impersonateServiceAccount": "deployer@p.iam.gserviceaccount.com",
            "gcp:credentials": "/keys/ci.json",
        },
        None,
        None,
    ),
]
AWS = COMMON + [
    (
        "region-malformed",
        "dev",
        {"aws:region": "Frankfurt"},
        None,
        ("aws:region", "Frankfurt", "AWS region"),
    ),
    (
        "arm-instance",
        "dev",
        {"awsInstanceType": "t4g.medium"},
        None,
        (P + "awsInstanceType", "t4g.medium", "x86_64"),
    ),
    (
        "db-class",
        "dev",
        {"awsDbInstanceClass": "t3.micro"},
        None,
        (P + "awsDbInstanceClass", "t3.micro", "db.t4g"),
    ),
    (
        "old-postgres",
        "dev",
        {"awsPostgresVersion": "12"},
        None,
        (P + "awsPostgresVersion", "12", "14, 15, 16, 17"),
    ),
    (
        "backups-too-long",
        "dev",
        {"awsDbBackupRetentionDays": "40"},
        None,
        (P + "awsDbBackupRetentionDays", "40", "0 to 35"),
    ),
    (
        "windows-overlap",
        "dev",
        {"awsDbMaintenanceWindow": "mon:01:15-mon:02:00"},
        None,
        (P + "awsDbMaintenanceWindow", "mon:01:15", "not overlapping"),
    ),
    (
        "unprotected-prod",
        "prod",
        {"awsDeletionProtection": "false"},
        None,
        (P + "awsDeletionProtection", "false", "prod"),
    ),
    (
        "protected-test",
        "test",
        {"awsDeletionProtection": "true"},
        None,
        (P + "awsDeletionProtection", "true", "test"),
    ),
    (
        "ssh-access-unknown",
        "dev",
        {"awsSshAccess": "telnet"},
        None,
        (P + "awsSshAccess", "telnet", "cidrs, session-manager"),
    ),
    (
        "session-manager-with-cidrs",
        "dev",
        {"awsSshAccess": "session-manager"},
        None,
        (P + "sshAllowedCidrs", "198.51.100.7/32", "empty list"),
    ),
    (
        "ecdsa-key-pair",
        "dev",
        {"sshPublicKeys": [ECDSA]},
        None,
        (P + "sshPublicKeys", "ecdsa-sha2-nistp256", "EC2 imports only RSA and ED25519"),
    ),
    ("ecdsa-after-ed25519", "dev", {"sshPublicKeys": [stack_harness.SSH_KEY, ECDSA]}, None, None),
    (
        "group-single-az-database",
        "dev",
        {**GROUP, "awsDbMultiAz": "false"},
        None,
        (P + "awsDbMultiAz", "false", "true with topology group"),
    ),
    (
        "group-ssh-by-cidrs",
        "dev",
        {**GROUP, "awsSshAccess": "cidrs"},
        None,
        (P + "awsSshAccess", "cidrs", "session-manager with topology group"),
    ),
    (
        "typo-aws-key",
        "dev",
        {"awsInstanceTyp": "t3.small"},
        None,
        (P + "awsInstanceTyp", "t3.small", "did you mean awsInstanceType?"),
    ),
    (
        "typo-provider-key",
        "dev",
        {"aws:regoin": "eu-west-1"},
        None,
        ("aws:regoin", "eu-west-1", "did you mean region?"),
    ),
    (
        "gcp-key-on-aws",
        "dev",
        {"gcp:project": "p"},
        None,
        ("gcp:project", "p", "no gcp:* keys in a aws stack"),
    ),
    (
        "assume-role-without-arn",
        "dev",
        {"aws:assumeRoles": [{"sessionName": "ci"}]},
        None,
        ("aws:assumeRoles", "sessionName", "roleArn"),
    ),
    (
        "assume-role-field-typo",
        "dev",
        {"aws:assumeRoles": [{"roleArn": ROLE, "rolearn": ROLE}]},
        None,
        ("aws:assumeRoles", "rolearn", "did you mean roleArn?"),
    ),
    (
        "account-id-short",
        "dev",
        {"aws:allowedAccountIds": ["12345"]},
        None,
        ("aws:allowedAccountIds", "12345", "12-digit"),
    ),
    (
        "profile-and-role",
        "dev",
        {
            "aws:profile": "ops",
            "aws:assumeRoles": [{"roleArn": ROLE}],
            "aws:allowedAccountIds": ["123456789012"],
        },
        None,
        None,
    ),
    (
        "vpc-too-large",
        "dev",
        {"awsVpcCidr": "10.0.0.0/8"},
        None,
        (P + "awsVpcCidr", "10.0.0.0/8", "/16 to /24"),
    ),
    (
        "vpc-public",
        "dev",
        {"awsVpcCidr": "8.8.0.0/16"},
        None,
        (P + "awsVpcCidr", "8.8.0.0/16", "private"),
    ),
    (
        "root-volume-small",
        "dev",
        {"awsRootVolumeGb": "5"},
        None,
        (P + "awsRootVolumeGb", "5", "10 to 2048"),
    ),
    (
        "storage-wrong-type",
        "dev",
        {"awsDbStorageGb": "ten"},
        None,
        (P + "awsDbStorageGb", "ten", "whole number"),
    ),
    (
        "multi-az-wrong-type",
        "dev",
        {"awsDbMultiAz": "yes"},
        None,
        (P + "awsDbMultiAz", "yes", "true or false"),
    ),
    (
        "major-upgrade-wrong-type",
        "dev",
        {"awsDbAllowMajorVersionUpgrade": "maybe"},
        None,
        (P + "awsDbAllowMajorVersionUpgrade", "maybe", "true or false"),
    ),
    (
        "expire-negative",
        "dev",
        {"awsBucketExpireDays": "-1"},
        None,
        (P + "awsBucketExpireDays", "-1", "0 to 36500"),
    ),
]


def _check(cloud: str, environment: str, overrides: dict, stack: str | None, refused) -> None:
    mocks = RecordingMocks()
    values = config(cloud, environment, **overrides)
    stack = stack or f"{cloud}-{environment}"
    if refused is None:
        run = stack_harness.run(values, stack=stack, mocks=mocks)
        assert check_run(run, stack)
        return
    key, value, allowed = refused
    with pytest.raises(SettingError) as raised:
        stack_harness.run(values, stack=stack, mocks=mocks)
    error = raised.value
    assert error.key == key
    assert value in str(error.value)
    assert allowed in error.allowed
    assert key in str(error) and allowed in str(error)
    assert mocks.resources == [], [r.name for r in mocks.resources]


@pytest.mark.parametrize(
    ("case", "environment", "overrides", "stack", "refused"), GCP, ids=[c[0] for c in GCP]
)
def test_gcp(case, environment, overrides, stack, refused):
    _check("gcp", environment, overrides, stack, refused)


@pytest.mark.parametrize(
    ("case", "environment", "overrides", "stack", "refused"), AWS, ids=[c[0] for c in AWS]
)
def test_aws(case, environment, overrides, stack, refused):
    _check("aws", environment, overrides, stack, refused)


def test_each_cloud_has_at_least_forty_cases():
    assert len(GCP) >= 40 and len(AWS) >= 40
