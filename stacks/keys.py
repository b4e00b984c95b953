"""Every stack setting the program reads: its type, and whether Pulumi.yaml declares it.

The Pulumi CLI refuses a stack that does not set a key ``Pulumi.yaml`` declares
without a default (pulumi/pulumi ``pkg/workspace/config.go``,
``missingStackConfigurationKeysError``), so ``Pulumi.yaml`` declares only the keys
every stack must set (``REQUIRED``) and those with one default for every stack
(``DECLARED_DEFAULTS``). Keys whose default follows the environment class or that
are optional without a default (``UNDECLARED``) are documented in a comment block of
``Pulumi.yaml`` instead; the program applies their defaults. A unit test keeps
``Pulumi.yaml`` and this module in step. Standard library only.
"""

from __future__ import annotations

import difflib

PROJECT = "mlflow-server"

#: Keys every stack must set (declared in Pulumi.yaml without a default).
REQUIRED = {
    "cloud": "string",
    "environment": "string",
    "httpsAllowedCidrs": "array",
    "sshPublicKeys": "array",
}
#: Keys with one default for every stack (declared in Pulumi.yaml with that default).
DECLARED_DEFAULTS: dict[str, tuple[str, object]] = {
    "mlflowVersion": ("string", "3.17.2"),
    "sshAllowedCidrs": ("array", []),
    "sshUser": ("string", "mlflow-admin"),
    "tlsMode": ("string", "self-signed"),
    "labels": ("object", {}),
    "topology": ("string", "single"),
    "gcpSubnetCidr": ("string", "10.20.0.0/24"),
    "gcpDbVersion": ("integer", 16),
    "gcpDbBackupStartTime": ("string", "03:00"),
    "gcpDbMaintenanceWindow": ("string", "sun:04"),
    "awsVpcCidr": ("string", "10.42.0.0/16"),
    "awsRootVolumeGb": ("integer", 30),
    "awsDbStorageGb": ("integer", 20),
    "awsPostgresVersion": ("string", "16"),
    "awsDbBackupWindow": ("string", "01:00-01:30"),
    "awsDbMaintenanceWindow": ("string", "sun:03:00-sun:04:00"),
    "awsDbAllowMajorVersionUpgrade": ("boolean", False),
}
#: Optional keys without one default: not declared, documented in Pulumi.yaml's comments.
UNDECLARED = {
    "domain": "string",
    "acmeEmail": "string",
    "expiresAt": "string",
    "adminPassword": "string",
    "groupSize": "integer",
    "groupCertificatePem": "string",
    "groupCertificateKeyPem": "string",
    "gcpMachineType": "string",
    "gcpBootDiskGb": "integer",
    "gcpDbTier": "string",
    "gcpDbAvailability": "string",
    "gcpDbDiskGb": "integer",
    "gcpDbBackups": "boolean",
    "gcpDbPointInTimeRecovery": "boolean",
    "gcpDbBackupRetention": "integer",
    "gcpDeletionProtection": "boolean",
    "gcpBucketLocation": "string",
    "gcpBucketVersioning": "boolean",
    "gcpBucketNoncurrentDays": "integer",
    "gcpBucketExpireDays": "integer",
    "awsSshAccess": "string",
    "awsInstanceType": "string",
    "awsDbInstanceClass": "string",
    "awsDbMultiAz": "boolean",
    "awsDbBackupRetentionDays": "integer",
    "awsDeletionProtection": "boolean",
    "awsBucketVersioning": "boolean",
    "awsBucketNoncurrentDays": "integer",
    "awsBucketExpireDays": "integer",
}
#: Keys whose value must be stored encrypted (``pulumi config set --secret``).
SECRET = frozenset({"adminPassword", "groupCertificateKeyPem"})
#: Keys that only ``topology: group`` reads; a single-server stack refuses them.
GROUP_ONLY = ("groupSize", "groupCertificatePem", "groupCertificateKeyPem")
TYPES: dict[str, str] = {
    **REQUIRED,
    **{key: typ for key, (typ, _) in DECLARED_DEFAULTS.items()},
    **UNDECLARED,
}

#: Provider keys the stack's explicit provider takes from the stack (``aws:profile``
#: and so on), as the provider argument each becomes and its type. Explicit providers
#: read no stack config themselves, so any other key of these namespaces would be
#: silently ignored: the program refuses it instead.
PROVIDER_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "gcp": {
        "project": ("project", "string"),
        "region": ("region", "string"),
        "zone": ("zone", "string"),
        "credentials": ("credentials", "secret"),
        "accessToken": ("access_token", "secret"),
        "impersonateServiceAccount": ("impersonate_service_account", "string"),
        "impersonateServiceAccountDelegates": ("impersonate_service_account_delegates", "array"),
        "billingProject": ("billing_project", "string"),
        "userProjectOverride": ("user_project_override", "boolean"),
    },
    "aws": {
        "region": ("region", "string"),
        "profile": ("profile", "string"),
        "assumeRoles": ("assume_roles", "roles"),
        "allowedAccountIds": ("allowed_account_ids", "array"),
        "forbiddenAccountIds": ("forbidden_account_ids", "array"),
        "sharedConfigFiles": ("shared_config_files", "array"),
        "sharedCredentialsFiles": ("shared_credentials_files", "array"),
        "accessKey": ("access_key", "secret"),
        "secretKey": ("secret_key", "secret"),
        "token": ("token", "secret"),
    },
}
#: ``aws:assumeRoles`` entries as the stack file writes them -> ProviderAssumeRoleArgs.
ASSUME_ROLE_FIELDS = {
    "roleArn": "role_arn",
    "sessionName": "session_name",
    "externalId": "external_id",
    "duration": "duration",
    "policy": "policy",
    "policyArns": "policy_arns",
    "sourceIdentity": "source_identity",
    "tags": "tags",
    "transitiveTagKeys": "transitive_tag_keys",
}


def nearest(name: str, known) -> str:
    """`` (did you mean X?)`` for the closest known name, or an empty string."""
    lowered = {k.lower(): k for k in known}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[found[0]]}?)" if found else ""
