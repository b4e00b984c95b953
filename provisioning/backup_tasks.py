"""Fabric tasks for backups: take one, list them, restore one."""

from __future__ import annotations

import time

from fabric import task
from invoke.exceptions import Exit

from provisioning import plays
from provisioning.session import load_deployment, on_host, say, selection
from provisioning.steps import backup as backup_steps


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def backup(c, stack=None, settings=None):
    """Back up the server: its database and a manifest and copy of its artifacts.

    The database is dumped with pg_dump into the bucket (database_backup: pg_dump, the
    default without a managed database) or saved by the managed database itself (an
    RDS snapshot or a Cloud SQL backup run, with your own cloud credentials). The
    artifacts are listed (key, size, checksum) and copied server-side under
    <artifacts destination>/.kit-backups/, so the backup survives the artifacts' loss.
    Prints the backup's ID and the command that restores it.

    Examples:
      fab backup --stack dev
      fab backup --settings onprem.yaml
    """
    deployment = load_deployment(c, stack, settings)
    started = time.monotonic()
    with on_host(deployment, "backup") as play:
        taken = plays.backup(play, deployment, selection(stack, settings))
    say(f"[{deployment.host}] {taken.summary()} in {time.monotonic() - started:.1f}s")
    say(f"backup ID: {taken.id}  at {taken.location}")
    say(f"restore with: {taken.restore_command}")


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def backups(c, stack=None, settings=None):
    """List the server's backups, oldest first (ID, when, database method, runs, objects).

    Example:
      fab backups --stack dev
    """
    deployment = load_deployment(c, stack, settings)
    with on_host(deployment, "backups", lock=False) as play:
        rows = backup_steps.listing(play.host)
    if not rows:
        print(f"{deployment.host}: no backups")
        return
    print(
        f"{'ID':<18} {'finished':<21} {'database':<20} {'runs':>6} {'objects':>8} {'bytes':>12}  reason"
    )
    for row in rows:
        if not row.get("complete"):
            print(f"{row['id']:<18} incomplete (no manifest): never restored")
            continue
        runs = "?" if row.get("runs") is None else row["runs"]
        print(
            f"{row['id']:<18} {row['finished']:<21} {row['database']:<20} {runs:>6} "
            f"{row['objects']:>8} {row['bytes']:>12}  {row['reason']}"
        )


@task(
    name="restore",
    help={
        "from": "ID of the backup to restore (fab backups lists them)",
        "stack": "Pulumi stack of the host",
        "settings": "YAML settings file of the host",
        "yes": "do not ask: the server's database and artifacts become the backup's",
    },
)
def restore(c, from_=None, stack=None, settings=None, yes=False):
    """Put the server back as a backup found it: database, then artifacts, then the schema.

    The servers stop meanwhile (the health gate proves them afterwards). The database
    becomes the backup's (every run, metric, model and user as they were then); objects
    of the backup that are missing or differ under the prefix are copied back, newer
    ones are left where they are. Works on the server that took the backup and on a
    freshly bootstrapped one that uses the same bucket prefix (the restore drill).

    Examples:
      fab restore --from 20250107T031500Z --stack dev
      fab restore --from 20250107T031500Z --settings onprem.yaml --yes
    """
    if not from_:
        raise Exit("restore: give --from BACKUP_ID (fab backups lists them)", code=2)
    deployment = load_deployment(c, stack, settings)
    if not yes:
        try:
            answer = input(
                f"Replace the database and artifacts of {deployment.host} with backup {from_}? [y/N] "
            )
        except EOFError:
            answer = ""  # no terminal to ask: --yes says it
        if answer.strip().lower() not in ("y", "yes"):
            raise Exit("restore: nothing changed (--yes replaces without asking)", code=2)
    started = time.monotonic()
    with on_host(deployment, "restore") as play:
        plays.restore(play, deployment, from_)
    say(f"[{deployment.host}] backup {from_} restored in {time.monotonic() - started:.1f}s")
