"""Backups of the MLflow server's database and artifacts, and their restore (on the VM).

Installed as /opt/mlflow/bin/mlflow-backup and run by ``fab backup``/``fab restore``
as a transient unit with the server's EnvironmentFile, as the mlflow user, with the
server's python:

    mlflow-backup create ID [--reason TEXT] [--database JSON]   a backup named ID
    mlflow-backup list                                          one JSON line per backup
    mlflow-backup show ID                                       its manifest (JSON)
    mlflow-backup restore-database ID                           the dump back into the database
    mlflow-backup restore-artifacts ID                          every object back under the prefix

A backup lives under ``<artifacts destination>/.kit-backups/``:

- ``<ID>/database.dump``: ``pg_dump -Fc`` of the whole database (tracking and auth
  tables), taken in one snapshot (omitted when ``--database`` says that the managed
  database's own backup holds it: an RDS snapshot, a Cloud SQL backup run);
- ``<ID>/objects.jsonl``: one line per artifact object (key, size, checksum, blob);
- ``blobs/<digest>``: each object's content, copied server-side (no byte through the
  VM) and shared by every backup that holds the same content;
- ``<ID>/manifest.json``: what the backup is, written last: a backup without it is
  incomplete and is never restored.

The database is dumped before the artifacts are listed: every artifact a dumped run
refers to is already in the store then (later ones are harmless extras).

The password never reaches a command line: pg_dump, pg_restore and psql read it from
a 0600 passfile in a private directory, removed afterwards.
Exit status: 0 done, 1 failed (the reason on stderr), 2 refused (nothing changed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from urllib.parse import parse_qsl, unquote, urlsplit

import kit_storage

FORMAT = 1
WORK_DIR = "/var/lib/mlflow/backup-work"
COPY_THREADS = 8
COUNTS = {
    "experiments": "SELECT count(*) FROM experiments",
    "runs": "SELECT count(*) FROM runs",
    "registered_models": "SELECT count(*) FROM registered_models",
    "model_versions": "SELECT count(*) FROM model_versions",
}
#: Before the dump is loaded, in the same transaction: every table, view, sequence, type
#: and routine the server's role owns in schema public goes, so that what a newer MLflow
#: (or a half-done migration) added does not survive next to the restored schema.
DROP_OWNED_IN_PUBLIC = """
DO $kit$
DECLARE r record;
BEGIN
  FOR r IN SELECT format('DROP TABLE IF EXISTS %I.%I CASCADE', n.nspname, c.relname) AS q
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f')
        AND pg_has_role(c.relowner, 'USAGE')
  LOOP EXECUTE r.q; END LOOP;
  FOR r IN SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
             CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
             ELSE 'SEQUENCE' END, n.nspname, c.relname) AS q
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm', 'S')
        AND pg_has_role(c.relowner, 'USAGE')
  LOOP EXECUTE r.q; END LOOP;
  FOR r IN SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure) AS q
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'public' AND pg_has_role(p.proowner, 'USAGE')
  LOOP EXECUTE r.q; END LOOP;
  FOR r IN SELECT format('DROP TYPE IF EXISTS %I.%I CASCADE', n.nspname, t.typname) AS q
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'c')
        AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
        AND pg_has_role(t.typowner, 'USAGE')
  LOOP EXECUTE r.q; END LOOP;
END
$kit$;
"""


class Refused(Exception):
    """Nothing was changed: the reason says what to do."""


def say(message: str) -> None:
    print(f"mlflow-backup: {message}", file=sys.stderr, flush=True)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- the database


def libpq_settings(uri: str) -> dict[str, str]:
    """libpq's environment for a SQLAlchemy URI, the password apart (``password`` key)."""
    parts = urlsplit(uri)
    settings = {
        "PGHOST": parts.hostname or "",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": unquote(parts.username or ""),
        "PGDATABASE": unquote(parts.path.lstrip("/")),
        "password": unquote(parts.password or ""),
    }
    names = {
        "sslmode": "PGSSLMODE",
        "sslrootcert": "PGSSLROOTCERT",
        "connect_timeout": "PGCONNECT_TIMEOUT",
    }
    for key, value in parse_qsl(parts.query):
        if key in names:
            settings[names[key]] = value
    return settings


def passfile_line(settings: dict[str, str]) -> str:
    """One ~/.pgpass line (``:`` and ``\\`` escaped, as libpq reads them)."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    fields = [settings["PGHOST"], settings["PGPORT"], settings["PGDATABASE"], settings["PGUSER"]]
    return ":".join([*(esc(f) for f in fields), esc(settings["password"])]) + "\n"


class Database:
    """pg_dump, pg_restore and psql against the server's database, the password in a passfile."""

    def __init__(self, uri: str, private_dir: str):
        if shutil.which("pg_dump") is None or shutil.which("psql") is None:
            raise Refused(
                "pg_dump and psql are not installed (fab bootstrap installs postgresql-client)"
            )
        settings = libpq_settings(uri)
        passfile = os.path.join(private_dir, "pgpass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(passfile_line(settings))
        self.env = {k: v for k, v in settings.items() if k != "password"}
        self.env.update(PGPASSFILE=passfile, PGAPPNAME="mlflow-backup")
        self.environ = {**os.environ, **self.env}
        self.environ.pop("MLFLOW_BACKEND_STORE_URI", None)

    def psql(self, sql: str) -> str:
        result = subprocess.run(
            ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env=self.environ, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    def versions(self) -> tuple[int, int, str, str]:
        """(client major, server major, client version, server version)."""
        text = subprocess.run(
            ["pg_dump", "--version"], capture_output=True, text=True, check=True
        ).stdout
        client = re.search(r"(\d+)(?:\.(\d+))?", text)
        server_num = int(self.psql("SHOW server_version_num"))
        server = self.psql("SHOW server_version").split()[0]
        return int(client.group(1)), server_num // 10000, client.group(0), server

    def check_versions(self) -> tuple[str, str]:
        client_major, server_major, client, server = self.versions()
        if client_major < server_major:
            raise Refused(
                f"pg_dump {client} on this VM is older than the database server "
                f"(PostgreSQL {server}): it cannot dump it. Install postgresql-client-"
                f"{server_major} (PostgreSQL's own apt repository), or use the managed "
                "database's backups (database_backup: managed)"
            )
        return client, server

    def dump(self, path: str) -> None:
        result = subprocess.run(
            ["pg_dump", "-Fc", "--no-password", "-f", path],
            env=self.environ, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {result.stderr.strip()[-800:]}")

    def restore(self, path: str) -> None:
        """Replace what the role owns in schema public by the dump, in one transaction."""
        psql = subprocess.Popen(
            ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self.environ,
        )  # fmt: skip
        psql.stdin.write(DROP_OWNED_IN_PUBLIC.encode())
        psql.stdin.flush()
        restore = subprocess.run(
            ["pg_restore", "--no-owner", "--no-privileges", "-f", "-", path],
            stdout=psql.stdin, stderr=subprocess.PIPE, env=self.environ, check=False,
        )  # fmt: skip
        psql.stdin.close()
        errors = psql.stderr.read().decode(errors="replace")
        psql.wait()
        if restore.returncode != 0:
            raise RuntimeError(f"pg_restore failed: {restore.stderr.decode()[-800:]}")
        if psql.returncode != 0:
            raise RuntimeError(f"loading the dump failed (nothing changed): {errors[-800:]}")

    def describe(self) -> dict:
        """Counts, schema revisions and size: what the manifest says the dump holds."""
        counts = {}
        for name, sql in COUNTS.items():
            try:
                counts[name] = int(self.psql(sql))
            except RuntimeError:
                counts[name] = None
        schema = {}
        for name, table in (("tracking", "alembic_version"), ("auth", "alembic_version_auth")):
            try:
                schema[name] = self.psql(f"SELECT version_num FROM {table}")  # noqa: S608 - two constants
            except RuntimeError:
                schema[name] = ""
        size = int(self.psql("SELECT pg_database_size(current_database())"))
        return {"counts": counts, "schema": schema, "size_bytes": size}


# --------------------------------------------------------------------------- backups


def kek_fingerprint() -> str:
    """Which KEK wraps the gateway secrets in this database (a digest, never the KEK)."""
    kek = os.environ.get("MLFLOW_CRYPTO_KEK_PASSPHRASE", "")
    if not kek:
        return ""
    return "sha256:" + hashlib.sha256(kek.encode()).hexdigest()[:16]


def mlflow_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlflow")
    except Exception:  # noqa: BLE001
        return ""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_all(store, pairs: list[tuple[str, str, int]]) -> None:
    """Server-side copies (source, target, size), several at a time."""
    with concurrent.futures.ThreadPoolExecutor(COPY_THREADS) as pool:
        for future in [pool.submit(store.copy, *pair) for pair in pairs]:
            future.result()


def backup_artifacts(store, backup_id: str) -> dict:
    """Each object's content into the shared blobs (only what is not there yet), and the list."""
    entries = store.artifacts()
    have = {e.key for e in store.list(f"{kit_storage.BACKUPS}/blobs/")}
    wanted = {e.blob: e for e in entries}
    missing = [(e.key, blob, e.size) for blob, e in wanted.items() if blob not in have]
    say(f"{len(entries)} artifact objects, {len(missing)} new to the backup store")
    copy_all(store, missing)
    lines = "".join(
        json.dumps({"key": e.key, "size": e.size, "checksum": e.checksum, "blob": e.blob}) + "\n"
        for e in sorted(entries, key=lambda e: e.key)
    )
    store.put(f"{kit_storage.BACKUPS}/{backup_id}/objects.jsonl", lines.encode())
    return {
        "destination": store.uri,
        "objects": len(entries),
        "bytes": sum(e.size for e in entries),
        "copied": len(missing),
        "list": f"{kit_storage.BACKUPS}/{backup_id}/objects.jsonl",
    }


def create(backup_id: str, reason: str, database: dict | None) -> dict:
    store = kit_storage.open_store()
    base = f"{kit_storage.BACKUPS}/{backup_id}"
    if store.get(f"{base}/manifest.json") is not None:
        raise Refused(f"backup {backup_id} exists already")
    manifest = {
        "format": FORMAT,
        "id": backup_id,
        "reason": reason,
        "started": now(),
        "mlflow_version": mlflow_version(),
        "kek_fingerprint": kek_fingerprint(),
    }
    os.makedirs(WORK_DIR, mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as private:
        db = Database(os.environ["MLFLOW_BACKEND_STORE_URI"], private)
        described = db.describe()
        if database is None:
            client, server = db.check_versions()
            dump = os.path.join(private, "database.dump")
            say(f"pg_dump {client} of PostgreSQL {server}")
            db.dump(dump)
            store.upload(f"{base}/database.dump", dump)
            database = {
                "method": "pg_dump",
                "key": f"{base}/database.dump",
                "bytes": os.path.getsize(dump),
                "sha256": sha256_file(dump),
                "pg_dump": client,
                "server": server,
            }
        manifest["database"] = {**database, **described}
    manifest["artifacts"] = backup_artifacts(store, backup_id)
    manifest["finished"] = now()
    store.put(f"{base}/manifest.json", json.dumps(manifest, indent=1).encode())
    say(f"backup {backup_id} complete")
    return manifest


def read_manifest(store, backup_id: str) -> dict:
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]*", backup_id):
        raise Refused(f"{backup_id!r} is not a backup ID")
    data = store.get(f"{kit_storage.BACKUPS}/{backup_id}/manifest.json")
    if data is None:
        raise Refused(f"no complete backup {backup_id} in {store.uri}/{kit_storage.BACKUPS}")
    return json.loads(data)


def listing(store) -> list[dict]:
    """A summary of every backup, oldest first; incomplete ones say so."""
    rows = []
    for name in sorted(store.children(kit_storage.BACKUPS)):
        if name == "blobs":
            continue
        data = store.get(f"{kit_storage.BACKUPS}/{name}/manifest.json")
        if data is None:
            rows.append({"id": name, "complete": False})
            continue
        m = json.loads(data)
        rows.append(
            {
                "id": name,
                "complete": True,
                "finished": m.get("finished", ""),
                "reason": m.get("reason", ""),
                "mlflow_version": m.get("mlflow_version", ""),
                "database": m["database"].get("method", ""),
                "runs": m["database"].get("counts", {}).get("runs"),
                "objects": m["artifacts"]["objects"],
                "bytes": m["artifacts"]["bytes"],
            }
        )
    return rows


# --------------------------------------------------------------------------- restore


def restore_database(backup_id: str) -> dict:
    store = kit_storage.open_store()
    manifest = read_manifest(store, backup_id)
    database = manifest["database"]
    if database.get("method") != "pg_dump":
        raise Refused(
            f"backup {backup_id}'s database is a {database.get('method')}: restore it there"
        )
    os.makedirs(WORK_DIR, mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as private:
        db = Database(os.environ["MLFLOW_BACKEND_STORE_URI"], private)
        dump = os.path.join(private, "database.dump")
        store.download(database["key"], dump)
        if sha256_file(dump) != database["sha256"]:
            raise RuntimeError(f"{database['key']} differs from what backup {backup_id} recorded")
        client_major, server_major, client, server = db.versions()
        say(f"loading the dump of {backup_id} into PostgreSQL {server} (pg_restore {client})")
        db.restore(dump)
        counts = db.describe()["counts"]
    say(f"database restored: {counts}")
    return {"counts": counts}


def restore_artifacts(backup_id: str) -> dict:
    """Every object of the backup back at its key, unless the same content is there already."""
    store = kit_storage.open_store()
    manifest = read_manifest(store, backup_id)
    data = store.get(manifest["artifacts"]["list"])
    wanted = [json.loads(line) for line in (data or b"").decode().splitlines() if line]
    if len(wanted) != manifest["artifacts"]["objects"]:
        raise RuntimeError(f"{manifest['artifacts']['list']} lists {len(wanted)} objects, "
                           f"the manifest {manifest['artifacts']['objects']}")  # fmt: skip
    present = {e.key: e for e in store.artifacts()}
    todo = []
    for item in wanted:
        here = present.get(item["key"])
        if here is None or here.size != item["size"] or here.checksum != item["checksum"]:
            todo.append((item["blob"], item["key"], item["size"]))
    say(f"{len(wanted)} objects in backup {backup_id}, {len(todo)} to copy back")
    copy_all(store, todo)
    for blob, key, size in todo:
        found = store.head(key)
        if found is None or found.size != size:
            raise RuntimeError(f"{key} is not back as it was after the copy from {blob}")
    extra = len(set(present) - {item["key"] for item in wanted})
    return {"objects": len(wanted), "copied": len(todo), "not_in_backup": extra}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-backup")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("id")
    c.add_argument("--reason", default="on demand")
    c.add_argument("--database", help="JSON: the managed database's own backup of this moment")
    sub.add_parser("list")
    for name in ("show", "restore-database", "restore-artifacts"):
        sub.add_parser(name).add_argument("id")
    sub.add_parser("check")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            database = json.loads(args.database) if args.database else None
            result = create(args.id, args.reason, database)
        elif args.command == "list":
            result = listing(kit_storage.open_store())
        elif args.command == "show":
            result = read_manifest(kit_storage.open_store(), args.id)
        elif args.command == "restore-database":
            result = restore_database(args.id)
        elif args.command == "restore-artifacts":
            result = restore_artifacts(args.id)
        else:
            with tempfile.TemporaryDirectory() as private:
                client, server = Database(
                    os.environ["MLFLOW_BACKEND_STORE_URI"], private
                ).check_versions()
            result = {"pg_dump": client, "server": server}
    except Refused as refused:
        say(f"refused: {refused}")
        return 2
    except Exception as error:  # noqa: BLE001 - the reason goes to the journal and the operator
        say(f"failed: {type(error).__name__}: {error}")
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
