"""The server's database for mlflow-backup (on the VM): libpq settings from the server's
URI, the password in a 0600 passfile, and pg_dump, pg_restore and psql against it.

Installed beside mlflow-backup (which imports it) by ``fab bootstrap``'s backup tools step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import parse_qsl, unquote, urlsplit

COUNTS = {
    "experiments": "SELECT count(*) FROM experiments",
    "runs": "SELECT count(*) FROM runs",
    "registered_models": "SELECT count(*) FROM registered_models",
    "model_versions": "SELECT count(*) FROM model_versions",
}
#: Before the dump is loaded, in the same transaction: every table, view, sequence, type
#: and routine the server's role owns in schema public goes, so that what a newer MLflow
#: (or a half-done migration) added does not survive next to the restored schema; and
#: the schema of the mlflow-oidc-auth plugin (auth oidc: created by fab bootstrap, as the
#: role) when the role owns it: a dump of such a server creates it again, and a dump
#: without it brings back a server without the plugin's users and grants.
DROP_OWNED_BEFORE_RESTORE = """
DO $kit$
DECLARE r record;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mlflow_oidc_auth'
             AND pg_has_role(nspowner, 'USAGE')) THEN
    DROP SCHEMA mlflow_oidc_auth CASCADE;
  END IF;
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
        """Replace what the role owns in schema public (and the plugin's schema) by the
        dump, in one transaction."""
        psql = subprocess.Popen(
            ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self.environ,
        )  # fmt: skip
        psql.stdin.write(DROP_OWNED_BEFORE_RESTORE.encode())
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
