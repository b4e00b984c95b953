"""What a backup is to the operator, and which method saves the database."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from provisioning.settings import Deployment

#: The database's method per cloud when it is managed (database_backup: managed or auto).
MANAGED = {"aws": "rds-snapshot", "gcp": "cloudsql-backup-run"}
PG_DUMP = "pg_dump"


def database_method(d: Deployment) -> str:
    """``pg_dump``, ``rds-snapshot`` or ``cloudsql-backup-run`` for this deployment."""
    managed = d.cloud in MANAGED and d.db_instance is not None and d.db_location is not None
    if d.database_backup == "managed" or (d.database_backup == "auto" and managed):
        return MANAGED[d.cloud]
    return PG_DUMP


def new_id(now: datetime.datetime | None = None) -> str:
    """A backup's ID: its UTC start time, sortable (``20250107T031500Z``)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class BackupRecord:
    """One complete backup, as its manifest describes it."""

    id: str
    #: ``pg_dump``, ``rds-snapshot`` or ``cloudsql-backup-run``.
    method: str
    finished: str
    mlflow_version: str
    runs: int | None
    objects: int
    bytes: int
    #: Where the backup lives: ``<artifacts destination>/.kit-backups/<id>``.
    location: str
    #: What to run to put the server back as the backup found it.
    restore_command: str

    @classmethod
    def from_manifest(cls, manifest: dict, restore_command: str) -> BackupRecord:
        artifacts = manifest["artifacts"]
        return cls(
            id=manifest["id"],
            method=manifest["database"]["method"],
            finished=manifest.get("finished", ""),
            mlflow_version=manifest.get("mlflow_version", ""),
            runs=manifest["database"].get("counts", {}).get("runs"),
            objects=artifacts["objects"],
            bytes=artifacts["bytes"],
            location=f"{artifacts['destination']}/.kit-backups/{manifest['id']}",
            restore_command=restore_command,
        )

    def summary(self) -> str:
        runs = "?" if self.runs is None else self.runs
        return (
            f"backup {self.id}: database by {self.method}, {runs} runs, "
            f"{self.objects} artifact objects ({self.bytes} bytes), MLflow {self.mlflow_version}"
        )
