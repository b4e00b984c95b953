"""The server's own identity: a key-less service account with least privilege."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.marker import described
from stacks.gcp.settings import GcpSettings


@dataclass(frozen=True, kw_only=True)
class IdentityArgs:
    settings: GcpSettings
    #: The artifact bucket, the one bucket the account may use.
    bucket: pulumi.Input[str]


#: Project-level roles the server needs: Cloud SQL connections, its logs and metrics.
PROJECT_ROLES = (
    "roles/cloudsql.client",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
)
#: Read, write, list and delete objects; no bucket administration, no IAM changes.
BUCKET_ROLE = "roles/storage.objectUser"
#: Granted on the account itself, so the server can sign URLs as itself: the VM's
#: account has no key, so signing goes through IAM's ``signBlob``
#: (``iam.serviceAccounts.signBlob``), which this role carries. MLflow's server signs
#: the part URLs of a client's multipart upload to GCS this way
#: (``GCSArtifactRepository.create_multipart_upload``, ``blob.generate_signed_url``).
SELF_SIGNING_ROLE = "roles/iam.serviceAccountTokenCreator"


class Identity(Component):
    """A service account (no keys: the VM gets tokens from the metadata server) with
    object access on the artifact bucket only, never a project-wide storage role, and
    the right to sign as itself, granted on itself only (never on the project, where
    it would cover every service account in it)."""

    TYPE = "mlflow-server:gcp:Identity"

    def declare(self, name: str, args: IdentityArgs) -> dict[str, pulumi.Input]:
        s = args.settings

        self.account = gcp.serviceaccount.Account(
            f"{name}-sa",
            account_id=s.service_account_id,
            display_name="MLflow tracking server",
            description=described("Identity of the MLflow tracking server VM", s.common.stack),
            opts=self.child,
        )
        self.email = self.account.email
        self.bucket_grant = gcp.storage.BucketIAMMember(
            f"{name}-bucket-objects",
            bucket=args.bucket,
            role=BUCKET_ROLE,
            member=self.account.member,
            opts=self.child,
        )
        self.self_signing = gcp.serviceaccount.IAMMember(
            f"{name}-sign-as-itself",
            service_account_id=self.account.name,
            role=SELF_SIGNING_ROLE,
            member=self.account.member,
            opts=self.child,
        )
        self.project_grants = [
            gcp.projects.IAMMember(
                f"{name}-{role.split('/')[1].replace('.', '-').lower()}",
                project=s.project,
                role=role,
                member=self.account.member,
                opts=self.child,
            )
            for role in PROJECT_ROLES
        ]
        return {"email": self.email}
