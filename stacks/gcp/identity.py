"""The server's own identity: a key-less service account with least privilege."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.gcp.marker import described

#: Project-level roles the server needs: Cloud SQL connections, its logs and metrics.
PROJECT_ROLES = (
    "roles/cloudsql.client",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
)
#: Read, write, list and delete objects; no bucket administration, no IAM changes.
BUCKET_ROLE = "roles/storage.objectUser"


@dataclass(frozen=True, kw_only=True)
class IdentityArgs:
    project: str
    account_id: str
    bucket: pulumi.Input[str]
    #: The stack name, marked in the account's description (accounts take no labels).
    stack: str


class Identity(pulumi.ComponentResource):
    """A service account (no keys: the VM gets tokens from the metadata server) with
    object access on the artifact bucket only, never a project-wide storage role."""

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-server:gcp:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.account = gcp.serviceaccount.Account(
            f"{name}-sa",
            account_id=args.account_id,
            display_name="MLflow tracking server",
            description=described("Identity of the MLflow tracking server VM", args.stack),
            opts=child,
        )
        self.email = self.account.email
        self.bucket_grant = gcp.storage.BucketIAMMember(
            f"{name}-bucket-objects",
            bucket=args.bucket,
            role=BUCKET_ROLE,
            member=self.account.member,
            opts=child,
        )
        self.project_grants = [
            gcp.projects.IAMMember(
                f"{name}-{role.split('/')[1].replace('.', '-').lower()}",
                project=args.project,
                role=role,
                member=self.account.member,
                opts=child,
            )
            for role in PROJECT_ROLES
        ]
        self.register_outputs({"email": self.email})
