"""User changes reach every server instance at once, and a request's admin check costs no query.

MLflow 3.17's basic auth keeps each verified credential, with its ``User``, in a per-process
cache (``auth_cache_ttl_seconds``): a password check costs ~90 ms of scrypt. A change made
through one instance (password, admin flag, deletion) clears that instance's cache only
(``_invalidate_user_auth_cache``); the others accept the old credential until the TTL runs
out. And every request still asks the database whether its sender is an admin
(``sender_is_admin``: ``store.get_user``, a checkout with its pre-ping, a query and a
commit: about 1.7 ms of a 12 ms ``log_metric``).

Here each instance listens on the auth database (PostgreSQL's LISTEN/NOTIFY): a trigger on
the ``users`` table, installed by ``mlflow-migrate``, notifies ``CHANNEL`` with the username
of every row updated or deleted, and the listener drops that user's cached credentials at
once, on every instance of every host. While that holds, the cached ``User`` is as fresh as
the database, so ``sender_is_admin`` answers from it instead of querying.

While the listener is not connected (starting, the database restarted, the trigger
missing) the cache is not trusted: the admin check queries and cached credentials age by
their TTL, as in MLflow alone. On every (re)connection the whole cache is dropped (changes
may have been missed meanwhile), after LISTEN and before the cache is trusted again. A
connection that died silently is found by a ping every ``PING_SECONDS`` that TCP gives up
on after ``TCP_TIMEOUT_MS``. Each instance logs when it listens and, once per reason, when
it does not (``fab status`` shows the last of these per instance).

Only for PostgreSQL, basic auth through ``authenticate_request_basic_auth``, with the
credential cache on; anything else is left as MLflow has it.
"""

from __future__ import annotations

import logging
import select
import threading
import time

CHANNEL = "mlflow_kit_users"
TRIGGER = "mlflow_kit_user_changed"
APPLICATION_NAME = "mlflow-kit-auth-listener"
PING_SECONDS = 5.0
TCP_TIMEOUT_MS = 5000
RETRY_SECONDS = 2.0
LISTENING_MESSAGE = "listening for user changes"
UNHEARD_MESSAGE = "user changes unheard"
BASIC_AUTH = "mlflow.server.auth:authenticate_request_basic_auth"

_USERS_TRIGGER = (
    "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    f"WHERE t.tgname = '{TRIGGER}' AND c.relname = 'users' "
    "AND c.relnamespace = to_regnamespace(current_schema())"
)
#: 1 when the users table has the trigger, enabled.
TRIGGER_PRESENT = f"SELECT count(*) {_USERS_TRIGGER} AND t.tgenabled <> 'D'"  # noqa: S608 - constants
#: Run by mlflow-migrate (templates/mlflow-migrate.py) in the auth database after the auth
#: schema's migrations, every time. The trigger is created only when missing: DROP TRIGGER
#: would lock the users table against the running servers' reads; ENABLE does not.
TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', OLD.username);
    IF TG_OP = 'UPDATE' AND NEW.username IS DISTINCT FROM OLD.username THEN
        PERFORM pg_notify('{CHANNEL}', NEW.username);
    END IF;
    RETURN NULL;
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 {_USERS_TRIGGER}) THEN
        CREATE TRIGGER {TRIGGER} AFTER UPDATE OR DELETE ON users
            FOR EACH ROW EXECUTE FUNCTION {TRIGGER}();
    END IF;
END
$$;
ALTER TABLE users ENABLE TRIGGER {TRIGGER};
"""  # noqa: S608 - constants

#: Under MLflow's logger, so its handler (stderr, the journal) and level (INFO) apply.
_log = logging.getLogger("mlflow.kit_auth")
#: Set while the listener holds LISTEN on a connection that answered its last ping.
LISTENING = threading.Event()
_started = threading.Lock()
_thread: threading.Thread | None = None


def _forget_all(auth) -> None:
    with auth._USER_AUTH_CACHE_LOCK:
        auth._USER_AUTH_CACHE.clear()


def _listen_once(auth, engine) -> None:
    """Hold one connection's LISTEN until it fails (raises)."""
    connection = engine.raw_connection()
    try:
        raw = connection.driver_connection
        raw.autocommit = True
        with raw.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
            cursor.execute(TRIGGER_PRESENT)
            if cursor.fetchone()[0] != 1:
                raise RuntimeError(
                    f"no trigger {TRIGGER} on the users table (mlflow-migrate installs it)"
                )
            _forget_all(auth)
            LISTENING.set()
            _log.info("%s on %s", LISTENING_MESSAGE, CHANNEL)
            while True:
                if select.select([raw], [], [], PING_SECONDS) == ([], [], []):
                    cursor.execute("SELECT 1")
                raw.poll()
                while raw.notifies:
                    auth._invalidate_user_auth_cache(raw.notifies.pop(0).payload)
    finally:
        LISTENING.clear()
        connection.close()


def _listen(auth, uri: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        uri,
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={
            "application_name": APPLICATION_NAME,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
            "tcp_user_timeout": TCP_TIMEOUT_MS,
        },
    )
    reported = None
    while True:
        try:
            _listen_once(auth, engine)
        except Exception as error:  # noqa: BLE001 - any failure: stop trusting, retry
            message = f"{type(error).__name__}: {str(error).strip()[:300]}"
            if message != reported:
                _log.warning(
                    "%s, admin checks query the database meanwhile: %s",
                    UNHEARD_MESSAGE,
                    message,
                )
                reported = message
        time.sleep(RETRY_SECONDS)


def sender_is_admin_cached(auth, original):
    """``sender_is_admin`` answered from the credential cache while the listener holds."""

    def sender_is_admin():
        from flask import request

        credentials = request.authorization
        if LISTENING.is_set() and credentials is not None and credentials.password is not None:
            key = auth._auth_cache_key(credentials.username, credentials.password)
            with auth._USER_AUTH_CACHE_LOCK:
                user = auth._USER_AUTH_CACHE.get(key)
            if user is not None:
                return user.is_admin
        return original()

    sender_is_admin.__wrapped__ = original
    return sender_is_admin


def install() -> bool:
    """Start the listener and answer admin checks from the cache, where it applies."""
    global _thread
    import mlflow.server.auth as auth

    config = auth.auth_config
    if (
        auth._USER_AUTH_CACHE is None
        or config.authorization_function != BASIC_AUTH
        or not config.database_uri.startswith("postgresql")
    ):
        return False
    with _started:
        if _thread is None:
            auth.sender_is_admin = sender_is_admin_cached(auth, auth.sender_is_admin)
            _thread = threading.Thread(
                target=_listen, args=(auth, config.database_uri), name=APPLICATION_NAME, daemon=True
            )
            _thread.start()
    return True
