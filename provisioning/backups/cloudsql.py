"""A Cloud SQL instance's own backups: take a backup run, and restore the instance from it.

Run from the operator's machine with the operator's Google credentials
(application default credentials), over the Cloud SQL Admin API v1 with
google-auth's AuthorizedSession:

- ``POST .../projects/{project}/instances/{instance}/backupRuns`` (backupRuns.insert)
  answers an Operation; its ``backupContext.backupId`` names the backup run;
- ``GET .../projects/{project}/operations/{operation}`` (operations.get) until its
  ``status`` is ``DONE``; an ``error.errors[]`` there is the failure;
- ``POST .../projects/{project}/instances/{instance}/restoreBackup``
  (instances.restoreBackup) with ``restoreBackupContext {backupRunId, project,
  instanceId}``: the instance itself is overwritten (the whole instance: every
  database and user as they were), so the server's backend URI stays right.

Reference: cloud.google.com/sql/docs/postgres/admin-api/rest/v1 (backupRuns/insert,
operations/get, instances/restoreBackup, Operation). The unit tests replay responses
written from that reference (tests/unit/recorded/cloudsql_*.json).
"""

from __future__ import annotations

import time
from typing import Any

API = "https://sqladmin.googleapis.com/v1"
SCOPE = "https://www.googleapis.com/auth/sqlservice.admin"
TIMEOUT_S = 3600


class CloudSqlError(RuntimeError):
    """The API refused a call, or an operation ended with errors."""


def session():
    """An authorized session from application default credentials."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _project = google.auth.default(scopes=[SCOPE])
    return AuthorizedSession(credentials)


def _json(response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise CloudSqlError(f"{what}: HTTP {response.status_code}: {message}")
    return response.json()


def wait(
    http, project: str, operation: dict, *, poll: float = 10, timeout: float = TIMEOUT_S
) -> dict:
    """Poll operations.get until the operation is DONE; raise with its errors, if any."""
    deadline = time.monotonic() + timeout
    while operation.get("status") != "DONE":
        if time.monotonic() > deadline:
            raise CloudSqlError(f"operation {operation.get('name')} not done after {timeout:.0f}s")
        time.sleep(poll)
        url = f"{API}/projects/{project}/operations/{operation['name']}"
        operation = _json(http.get(url), f"operations.get {operation['name']}")
    errors = (operation.get("error") or {}).get("errors") or []
    if errors:
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
        raise CloudSqlError(
            f"operation {operation['name']} ({operation.get('operationType')}) failed: {text}"
        )
    return operation


def take(http, project: str, instance: str, backup_id: str, *, poll: float = 10) -> dict[str, Any]:
    """An on-demand backup run of ``instance``, waited for; what the manifest records of it."""
    url = f"{API}/projects/{project}/instances/{instance}/backupRuns"
    description = f"mlflow-kit backup {backup_id}"
    operation = _json(http.post(url, json={"description": description}), "backupRuns.insert")
    done = wait(http, project, operation, poll=poll)
    run_id = (done.get("backupContext") or {}).get("backupId")
    if not run_id:
        run_id = _find_run(http, project, instance, description)
    return {
        "method": "cloudsql-backup-run",
        "backup_run": str(run_id),
        "instance": instance,
        "project": project,
        "operation": done["name"],
    }


def _find_run(http, project: str, instance: str, description: str) -> str:
    url = f"{API}/projects/{project}/instances/{instance}/backupRuns"
    listed = _json(http.get(url, params={"maxResults": 50}), "backupRuns.list")
    for run in listed.get("items", []):
        if run.get("description") == description:
            return str(run["id"])
    raise CloudSqlError(f"no backup run described {description!r} on {instance}")


def restore(
    http, project: str, instance: str, backup_run: str, *, poll: float = 10
) -> dict[str, Any]:
    """Overwrite ``instance`` with ``backup_run`` (of the same instance), waited for."""
    url = f"{API}/projects/{project}/instances/{instance}/restoreBackup"
    body = {
        "restoreBackupContext": {
            "kind": "sql#restoreBackupContext",
            "backupRunId": str(backup_run),
            "project": project,
            "instanceId": instance,
        }
    }
    operation = _json(http.post(url, json=body), "instances.restoreBackup")
    done = wait(http, project, operation, poll=poll)
    return {"instance": instance, "operation": done["name"]}
