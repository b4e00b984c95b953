"""Backups and restores of the server: its database and its artifacts.

The work on the VM is done by ``mlflow-backup`` (provisioning/backups/remote), run
with the server's python and EnvironmentFile as the mlflow user: as a transient
unit for long work (provisioning.jobs; a dropped connection does not stop it), and
through ``systemd-run --pipe`` for reads. A managed database's own backup (an RDS
snapshot, a Cloud SQL backup run) is taken from the operator's machine with the
operator's credentials (provisioning.backups.rds / cloudsql).

:func:`before_migration` is what an upgrade calls before it migrates the schema.
"""

from __future__ import annotations

import json
import shlex

from provisioning import facts, files, jobs
from provisioning.backups import cloudsql, rds, record, remote
from provisioning.backups.record import BackupRecord
from provisioning.layout import GROUP, PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.steps import packages, servers
from provisioning.steps.conda import Environment
from provisioning.transport import Host, PreflightError

CLIENT_PACKAGE = "postgresql-client"
#: The programs this step installs (gc and metrics install their own).
PROGRAMS = ("kit_storage.py", "kit_database.py", "mlflow_backup.py")
#: The unit settings the programs run with: the server's secrets through its env file.
AS_SERVER = {
    "EnvironmentFile": PATHS["env_file"],
    "User": USER,
    "Group": GROUP,
    "WorkingDirectory": PATHS["state_dir"],
}
BACKUP_TIMEOUT_S = 4 * 3600
#: Units stopped while a restore replaces what they read.
STOPPED_FOR_RESTORE = ("mlflow-gc.timer", "mlflow-gc.service", "mlflow-metrics.service")


def program(*args: str) -> str:
    """The command line of ``mlflow-backup ARGS`` with the server's python."""
    return " ".join(
        [f"{PATHS['current_env']}/bin/python", PATHS["backup_program"], *map(shlex.quote, args)]
    )


def read(*args: str) -> facts.Fact:
    """``mlflow-backup ARGS`` as a read: a transient unit with the server's env, piped back."""
    props = " ".join(f"--property={k}={v}" for k, v in AS_SERVER.items())
    return facts.json_output(
        f"systemd-run --quiet --wait --pipe --collect {props} {program(*args)}"
    )


def restore_command(backup_id: str, selection: str) -> str:
    """What an operator runs to restore ``backup_id`` (``selection``: ``--stack dev`` ...)."""
    return f"fab restore --from {backup_id}" + (f" {selection}" if selection else "")


def tools(host: Host) -> Outcome[None]:
    """PostgreSQL's client (pg_dump, pg_restore, psql) and mlflow-backup on the VM."""
    done = []
    if CLIENT_PACKAGE not in host.read(facts.installed_packages((CLIENT_PACKAGE,))):
        jobs.run_job(
            host,
            "apt-backup",
            packages.apt_install_script([CLIENT_PACKAGE]),
            timeout=1800,
            description="apt-get install for MLflow backups",
        )
        if CLIENT_PACKAGE not in host.read(facts.installed_packages((CLIENT_PACKAGE,))):
            raise host.error("apt-get install", 1, f"{CLIENT_PACKAGE} not installed after apt")
        done.append(f"installed {CLIENT_PACKAGE}")
    done += install_programs(host, PROGRAMS)
    if not done:
        return unchanged(f"{CLIENT_PACKAGE} and mlflow-backup installed")
    return changed(", ".join(done))


def install_programs(host: Host, names: tuple[str, ...]) -> list[str]:
    """Install the named programs from provisioning/backups/remote; the paths that changed."""
    installed = []
    for name in names:
        path = remote.PROGRAMS[name]
        mode = "0644" if path.endswith(".py") else "0755"
        if files.ensure_file(host, path, remote.source(name), mode=mode):
            installed.append(path)
    return installed


def take(
    host: Host, deployment: Deployment, reason: str = "on demand", selection: str = ""
) -> Outcome[BackupRecord]:
    """A backup: the database (pg_dump into the bucket, or the managed database's own
    backup) and the artifacts (server-side copies), described by a manifest written last."""
    backup_id = record.new_id()
    method = record.database_method(deployment)
    args = ["create", backup_id, "--reason", reason]
    if method != record.PG_DUMP:
        host.note(f"{method} of {deployment.db_instance} in {deployment.db_location}")
        args += ["--database", json.dumps(managed_backup(deployment, method, backup_id))]
    jobs.run_job(
        host,
        f"backup-{backup_id}",
        program(*args),
        timeout=BACKUP_TIMEOUT_S,
        description=f"MLflow backup {backup_id}",
        properties=AS_SERVER,
    )
    manifest = host.read(read("show", backup_id))
    taken = BackupRecord.from_manifest(manifest, restore_command(backup_id, selection))
    return changed(taken.summary(), taken)


def managed_backup(deployment: Deployment, method: str, backup_id: str) -> dict:
    """The managed database's own backup of this moment (taken with the operator's credentials)."""
    if method == "rds-snapshot":
        return rds.take(rds.client(deployment.db_location), deployment.db_instance, backup_id)
    return cloudsql.take(
        cloudsql.session(), deployment.db_location, deployment.db_instance, backup_id
    )


def before_migration(
    host: Host, deployment: Deployment, selection: str = ""
) -> Outcome[BackupRecord]:
    """A backup taken before a schema migration; its record names the command that puts the
    server back (print it when the upgrade fails). Nothing to save on a host that has
    never run a server."""
    if not host.read(facts.exists(f"{PATHS['current_env']}/bin/python")):
        return unchanged("no server has run here yet: nothing to back up")
    if not host.read(facts.exists(PATHS["backup_program"])):
        raise host.error("backup", 1, "mlflow-backup is not installed: run fab bootstrap first")
    return take(
        host, deployment, f"before migrating to MLflow {deployment.mlflow_version}", selection
    )


def listing(host: Host) -> list[dict]:
    """Every backup in the bucket, oldest first (reads only)."""
    return host.read(read("list"))


# --------------------------------------------------------------------------- restore


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def manifest(host: Host, deployment: Deployment, backup_id: str) -> Outcome[dict]:
    """The backup's manifest, and whether this server can take it back."""
    found = host.read(read("show", backup_id))
    installed = host.read(facts.environment_versions(PATHS["envs_dir"]))
    current = host.read(facts.symlink_target(PATHS["current_env"])).rsplit("/", 1)[-1]
    running = installed.get(current, "")
    if not running:
        raise PreflightError(
            f"[{host.name}] no MLflow server installed here: run fab bootstrap first"
        )
    if version_tuple(found.get("mlflow_version", "0")) > version_tuple(running):
        raise PreflightError(
            f"[{host.name}] backup {backup_id} was taken with MLflow {found['mlflow_version']}, "
            f"newer than the {running} installed here: bootstrap that version first"
        )
    method = found["database"]["method"]
    if method != record.PG_DUMP and method != record.MANAGED.get(deployment.cloud):
        raise PreflightError(f"[{host.name}] backup {backup_id}'s database is a {method}")
    kek = host.read(facts.kek_fingerprint(PATHS["kek"]))
    if found.get("kek_fingerprint") and kek and kek != found["kek_fingerprint"]:
        host.note(
            "the backup's AI Gateway secrets were encrypted under another KEK than this "
            "server's: they will not decrypt here unless kek_passphrase is the old server's"
        )
    return unchanged(
        f"{backup_id}: {found['database'].get('counts', {}).get('runs')} runs, "
        f"{found['artifacts']['objects']} objects, MLflow {found.get('mlflow_version')}",
        found,
    )


def stop_serving(host: Host) -> Outcome[list[int]]:
    """Every server instance, gc and the metrics stopped; the value is the instances' ports."""
    ports = sorted(set(host.read(facts.INSTANCES)) - {servers.SURGE_PORT})
    units = [servers.unit(p) for p in ports] + list(STOPPED_FOR_RESTORE)
    host.run(f"systemctl stop {' '.join(units)}")
    return changed(f"stopped {len(ports)} instance(s), gc and metrics", ports)


def restore_database(host: Host, deployment: Deployment, found: dict) -> Outcome[None]:
    """The database as the backup found it: the dump loaded in one transaction (what the
    server's role owns in schema public replaced), or the managed database restored."""
    db = found["database"]
    if db["method"] == record.PG_DUMP:
        jobs.run_job(
            host,
            "restore-database",
            program("restore-database", found["id"]),
            timeout=BACKUP_TIMEOUT_S,
            description=f"MLflow restore of {found['id']} (database)",
            properties=AS_SERVER,
        )
        return changed(f"dump of {found['id']} loaded ({db['bytes']} bytes)")
    if db["method"] == "rds-snapshot":
        host.note(
            f"restoring RDS {db['instance']} from {db['snapshot']} (a new instance, then renamed)"
        )
        names = rds.restore(
            rds.client(db["region"]), db["instance"], db["snapshot"], found["id"].lower()
        )
        return changed(
            f"{names['instance']} restored from {db['snapshot']}; the one it replaced is "
            f"{names['previous']} (delete it once the restore is checked)"
        )
    host.note(f"restoring Cloud SQL {db['instance']} from backup run {db['backup_run']}")
    cloudsql.restore(cloudsql.session(), db["project"], db["instance"], db["backup_run"])
    return changed(f"{db['instance']} restored from backup run {db['backup_run']}")


def restore_artifacts(host: Host, found: dict) -> Outcome[None]:
    """Every object of the backup back under the prefix (server-side copies of what differs)."""
    jobs.run_job(
        host,
        "restore-artifacts",
        program("restore-artifacts", found["id"]),
        timeout=BACKUP_TIMEOUT_S,
        description=f"MLflow restore of {found['id']} (artifacts)",
        properties=AS_SERVER,
    )
    return changed(f"{found['artifacts']['objects']} objects of {found['id']} in place")


def current_environment(host: Host) -> Outcome[Environment]:
    """The environment the servers run, also the one the migration unit uses (``next``):
    the restored schema is brought to its MLflow (provisioning.steps.schema)."""
    current = host.read(facts.symlink_target(PATHS["current_env"]))
    if not current:
        raise host.error("restore", 1, "no current environment: run fab bootstrap first")
    moved = files.ensure_symlink(host, PATHS["next_env"], current)
    env = Environment(current)
    return (changed if moved else unchanged)(f"env {env.name}", env)


def resume_serving(host: Host, deployment: Deployment, ports: list[int]) -> Outcome[None]:
    """The instances started again (each healthy), then the metrics and the gc timer."""
    if ports:
        host.run(f"systemctl start {' '.join(servers.unit(p) for p in ports)}")
        for port in ports:
            servers.wait_healthy(host, port)
        # Back in nginx, also those a roll back left out.
        servers.publish(host, ports)
    others = ["mlflow-metrics.service"] + (["mlflow-gc.timer"] if deployment.gc_enabled else [])
    for unit in others:
        if host.read(facts.exists(f"{PATHS['systemd_dir']}/{unit}")):
            host.run(f"systemctl start {unit}")
    return changed(f"started {len(ports)} instance(s)")
