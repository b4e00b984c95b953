"""The database schema: where it is, where the new environment would take it, and the
migration itself (once, under a lock, before any server runs the new code).

A schema migration cannot be undone in place, so a database whose schema is ahead
of the MLflow being installed (a downgrade: an older ``mlflow_version``, or another
operator's kit with an older default) is refused before the servers or the database
change, naming both versions.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from provisioning import facts
from provisioning.layout import MIGRATE_UNIT_NAME, PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import server_backend_uri
from provisioning.settings import Deployment
from provisioning.steps.conda import HISTORIES_FUNCTION, Environment, histories_path
from provisioning.transport import Host

JOURNAL_LINES = 40

#: Reads the database's Alembic revisions (tracking, auth) against what the environment's
#: MLflow knows (the environment's record of them, provisioning.steps.conda; read from the
#: migration scripts when there is none), and whether the users table has the trigger the server
#: instances listen to (the kit's wheel, kit_auth). Input, JSON on stdin: the backend URI
#: and the histories file's path. Prints one JSON document. Without MLflow's import the
#: check takes about a second instead of four.
CHECK_SCRIPT = (
    """
import json, sys, warnings
warnings.filterwarnings("ignore")
given = json.load(sys.stdin)
"""
    + HISTORIES_FUNCTION
    + """
try:
    with open(given["histories"]) as handle:
        known = json.load(handle)
except FileNotFoundError:
    known = histories()
import sqlalchemy
from alembic.migration import MigrationContext
engine = sqlalchemy.create_engine(given["uri"], poolclass=sqlalchemy.pool.NullPool)
found = {"mlflow": known["mlflow"]}
with engine.connect() as connection:
    for name, table in (("tracking", "alembic_version"), ("auth", "alembic_version_auth")):
        history = known[name]
        current = MigrationContext.configure(connection, opts={"version_table": table}).get_current_revision()
        found[name] = {"current": current, "head": history["head"],
                       "known": current is None or current in history["pending"],
                       "pending": history["pending"].get(current, -1)}
    if engine.dialect.name == "postgresql":
        from kit_auth import TRIGGER_PRESENT
        found["user_trigger"] = connection.exec_driver_sql(TRIGGER_PRESENT).scalar() == 1
engine.dispose()
print(json.dumps(found))
"""
)


@dataclass(frozen=True)
class Schema:
    """One Alembic history (tracking or auth) of the database, seen by one MLflow version."""

    current: str | None
    head: str
    known: bool
    #: Migrations from ``current`` to ``head``; -1 for an empty database (all of them).
    pending: int


@dataclass(frozen=True)
class SchemaPlan:
    mlflow_version: str
    tracking: Schema
    auth: Schema
    #: The users table's trigger (kit_auth.TRIGGER) is there: mlflow-migrate installs it.
    user_trigger: bool = True

    @property
    def migrates(self) -> bool:
        return any(s.pending != 0 for s in (self.tracking, self.auth))

    @property
    def empty(self) -> bool:
        return self.tracking.current is None


def parse_plan(text: str) -> SchemaPlan:
    found = json.loads(text.strip().splitlines()[-1])
    return SchemaPlan(
        found["mlflow"],
        Schema(**found["tracking"]),
        Schema(**found["auth"]),
        found.get("user_trigger", True),
    )


def check(host: Host, deployment: Deployment, env: Environment) -> Outcome[SchemaPlan]:
    """What the new environment would do to the database's schema; a downgrade is refused."""
    command = f"{env.prefix}/bin/python -c {shlex.quote(CHECK_SCRIPT)}"
    given = {"uri": server_backend_uri(deployment), "histories": histories_path(env.prefix)}
    # As the service user: the database's CA is under /etc/mlflow, which only its group reads.
    result = host.run(command, user=USER, check=False, stdin=json.dumps(given), timeout=300)
    if result.exited != 0:
        raise host.error("schema check", result.exited, result.stderr or result.stdout)
    plan = parse_plan(result.stdout)
    for name, schema in (("tracking", plan.tracking), ("auth", plan.auth)):
        if not schema.known:
            running = _running_version(host)
            raise host.error(
                "schema check",
                1,
                f"refusing a downgrade: the database's {name} schema is at revision "
                f"{schema.current}, which MLflow {plan.mlflow_version} does not know (a newer "
                f"MLflow wrote it; the servers run MLflow {running}). Schema migrations cannot "
                f"be undone in place: keep mlflow_version at {running} (or newer), or restore "
                "a backup taken before the upgrade. Nothing was changed.",
            )
    if plan.empty:
        detail = f"empty database: MLflow {plan.mlflow_version} creates its schema"
    elif plan.migrates:
        detail = (
            f"MLflow {plan.mlflow_version} migrates: {plan.tracking.pending} tracking "
            f"({plan.tracking.current} -> {plan.tracking.head}) and {plan.auth.pending} auth "
            "migration(s)"
        )
    else:
        detail = f"schema current for MLflow {plan.mlflow_version} ({plan.tracking.head})"
    if not plan.empty and not plan.user_trigger:
        detail += "; the users table lacks the trigger the servers listen to"
    return unchanged(detail, plan)


def _running_version(host: Host) -> str:
    current = host.read(facts.symlink_target(PATHS["current_env"])).rsplit("/", 1)[-1]
    return host.read(facts.environment_versions(PATHS["envs_dir"])).get(current, "unknown")


def migrate(host: Host, deployment: Deployment, plan: SchemaPlan) -> Outcome[None]:
    """Upgrade the tracking and auth schemas with the new environment (mlflow-migrate.service),
    when the plan says so, the users table lacks its trigger, or a KEK rotation waits for
    the migration."""
    rotation = host.read(facts.exists(PATHS["kek_request"]))
    if not plan.migrates and plan.user_trigger and not rotation:
        return unchanged(f"nothing to migrate for MLflow {plan.mlflow_version}")
    command = f"systemctl start {MIGRATE_UNIT_NAME}"
    result = host.run(command, check=False, timeout=3600)
    if result.exited != 0:
        journal = host.read(facts.journal(f"-u {MIGRATE_UNIT_NAME}", JOURNAL_LINES, "cat"))
        raise host.error(command, result.exited, journal)
    if rotation and host.read(facts.exists(PATHS["kek_request"])):
        raise host.error(command, 1, "the KEK rotation request is still there after the migration")
    parts = [f"schema at MLflow {plan.mlflow_version}"] if plan.migrates else []
    if not plan.user_trigger and not plan.empty:
        parts.append("users table trigger installed")
    if rotation:
        parts.append("gateway secrets re-wrapped with the new KEK")
    return changed("; ".join(parts))
