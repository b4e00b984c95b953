"""The database schema: migrated once per MLflow version and environment, under a lock."""

from __future__ import annotations

from provisioning import facts
from provisioning.layout import GROUP, MIGRATE_UNIT_NAME, PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.steps.conda import Environment
from provisioning.transport import Host

JOURNAL_LINES = 40


def migration_marker(deployment: Deployment, env: Environment) -> str:
    return f"{PATHS['state_dir']}/migrated-{deployment.mlflow_version}-{env.name}"


def migrate(host: Host, deployment: Deployment, env: Environment) -> Outcome[None]:
    """Upgrade the tracking and auth schemas with the new environment (mlflow-migrate.service)."""
    marker = migration_marker(deployment, env)
    if host.read(facts.exists(marker)):
        return unchanged(f"schema already at MLflow {deployment.mlflow_version}")
    command = f"systemctl start {MIGRATE_UNIT_NAME}"
    result = host.run(command, check=False, timeout=3600)
    if result.exited != 0:
        journal = host.read(facts.journal(f"-u {MIGRATE_UNIT_NAME}", JOURNAL_LINES, "cat"))
        raise host.error(command, result.exited, journal)
    host.run(f"install -m 0644 -o {USER} -g {GROUP} /dev/null {marker}")
    return changed(f"schema at MLflow {deployment.mlflow_version}")
