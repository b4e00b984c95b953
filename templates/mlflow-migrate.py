"""Upgrade the MLflow schemas of the backend database (installed by fab bootstrap).

Run by mlflow-migrate.service with the python of the environment about to go live.
Reads the tracking URI from MLFLOW_BACKEND_STORE_URI and the auth database URI from
the basic-auth config (MLFLOW_AUTH_CONFIG_PATH), so no URI ever appears in argv.

The tracking schema is upgraded first: MLflow treats a database holding only the
auth tables as "not empty" and would skip creating its initial tables. The auth
schema keeps its own Alembic version table (alembic_version_auth), so both can share
one database. On Postgres both run under one session-level advisory lock, so two
bootstraps (or an operator and a bootstrap) never migrate at once.

Then it makes sure the auth schema's users table has, enabled, the trigger that tells
the server instances a user changed (kit_auth in the kit's wheel: they drop that user's
cached credentials at once); it is created only when missing.

Then, when fab leaves a rotation request in KEK_REQUEST (a first KEK on a server
that ran with MLflow's default passphrase, or ``fab rotate-kek``), it re-wraps the
gateway secrets' keys from the old KEK to the new one with MLflow's own
``mlflow crypto rotate-kek``, in this process (no passphrase in argv), and removes
the request once done.

Each statement of the migrations waits at most LOCK_TIMEOUT for a table's lock: a
migration queued behind another session's open transaction would hold up every later
query on that table behind it (PostgreSQL grants a table's locks in order), the
running servers' included. It fails instead, rolled back (each schema migrates in one
transaction), and can be run again once that session is gone.

Exit status 0: both schemas are at head (and a requested rotation done). 1: the
database is unreachable, a migration or the rotation failed (its error on stderr).
2: the environment is incomplete.
"""

import json
import os
import sys

#: pg_advisory_lock key: any constant int64 shared by every run; this is "mlflowmg".
LOCK_KEY = 0x6D6C666C6F776D67
#: A KEK rotation fab asks for: {"old": ..., "old_version": N, "new": ...} (0600, mlflow).
KEK_REQUEST = "/var/lib/mlflow/kek-rotation.json"
#: PostgreSQL's lock_timeout for every connection the migrations open.
LOCK_TIMEOUT = "30s"


def fail(status, message):
    print(f"mlflow-migrate: {message}", file=sys.stderr)
    return status


def run_click(command, args, what):
    """Run a click command in this process; return an error message or None."""
    import click

    try:
        command.main(args=args, standalone_mode=False, prog_name=what)
    except click.ClickException as exc:
        return f"{what} failed: {exc.format_message()}"
    except SystemExit as exc:
        if exc.code not in (0, None):
            return f"{what} failed with exit status {exc.code}"
    except Exception as exc:  # noqa: BLE001 - report the migration's own error
        return f"{what} failed: {type(exc).__name__}: {exc}"
    return None


def migrate(uri):
    """Upgrade the tracking schema, then the auth schema; return an error message or None."""
    from mlflow.db import upgrade as tracking_upgrade
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.db.cli import upgrade as auth_upgrade

    try:
        auth_uri = read_auth_config().database_uri
    except Exception as exc:  # noqa: BLE001
        return f"cannot read the auth config: {type(exc).__name__}: {exc}"
    error = run_click(tracking_upgrade, [uri], "tracking schema upgrade")
    if error is None:
        error = run_click(auth_upgrade, ["--url", auth_uri], "auth schema upgrade")
    if error is None:
        error = install_user_trigger(auth_uri)
    if error is None and os.path.exists(KEK_REQUEST):
        error = rotate_kek(uri)
    return error


def install_user_trigger(auth_uri):
    """The users table's trigger the server instances listen to (kit_auth, in the kit's
    wheel); PostgreSQL only. Return an error message or None."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(auth_uri, poolclass=sqlalchemy.pool.NullPool)
    if engine.dialect.name != "postgresql":
        return None
    from kit_auth import TRIGGER_SQL

    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(TRIGGER_SQL)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return f"user-change trigger: {type(exc).__name__}: {exc}"
    finally:
        engine.dispose()
    return None


def rotate_kek(uri):
    """Re-wrap the gateway secrets' keys as KEK_REQUEST asks; return an error message or None."""
    from mlflow.cli.crypto import rotate_kek as rotate

    with open(KEK_REQUEST) as handle:
        request = json.load(handle)
    os.environ["MLFLOW_CRYPTO_KEK_PASSPHRASE"] = request["old"]
    os.environ["MLFLOW_CRYPTO_KEK_VERSION"] = str(request["old_version"])
    args = ["--new-passphrase", request["new"], "--backend-store-uri", uri, "--yes"]
    error = run_click(rotate, args, "KEK rotation")
    if error is None:
        os.remove(KEK_REQUEST)
        print("mlflow-migrate: gateway secrets re-wrapped with the new KEK", file=sys.stderr)
    return error


def main():
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not uri:
        return fail(2, "MLFLOW_BACKEND_STORE_URI is not set (is the EnvironmentFile readable?)")
    if not os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        return fail(2, "MLFLOW_AUTH_CONFIG_PATH is not set")

    # Only SQLAlchemy before the lock is taken: an unreachable database fails in
    # a second, not after importing all of MLflow.
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as lock:
            if engine.dialect.name == "postgresql":
                print("mlflow-migrate: waiting for the migration lock", file=sys.stderr)
                lock.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
                lock.commit()
                # libpq reads PGOPTIONS for each new connection: the migrations', not this one.
                options = os.environ.get("PGOPTIONS", "")
                os.environ["PGOPTIONS"] = f"{options} -c lock_timeout={LOCK_TIMEOUT}".strip()
            error = migrate(uri)
            # Closing the connection releases the session-level lock.
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return fail(1, f"cannot take the migration lock: {type(exc).__name__}: {exc}")
    finally:
        engine.dispose()
    if error and "lock timeout" in error:
        error += (
            f" (another session held a lock on a table it changes for over {LOCK_TIMEOUT}: "
            "see pg_stat_activity; nothing of this schema's migration was kept, run it again "
            "once that session is gone)"
        )
    if error:
        return fail(1, error)
    print("mlflow-migrate: tracking and auth schemas are up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
