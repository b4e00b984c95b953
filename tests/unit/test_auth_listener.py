"""User changes through one server instance hold on the others at once (kit_auth): two real
MLflow servers as the unit runs them (``--app-name kit-streaming``, the kit's wheel on their
path) on one real PostgreSQL, its trigger installed by the real mlflow-migrate script.

MLflow alone keeps a verified credential per process for ``auth_cache_ttl_seconds`` (60 s
in the kit): a password changed or a user deleted through instance A still opens instance B
until then. And it asks the database on every request whether the sender is an admin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from provisioning import artifact_streaming
from provisioning.artifact_streaming import kit_auth
from provisioning.auth import AUTH_CACHE_TTL_SECONDS
from provisioning.render import render
from provisioning.steps.schema import CHECK_SCRIPT, SchemaPlan, parse_plan
from tests.localcloud.procs import free_port, wait_healthy

pytestmark = pytest.mark.service  # a PostgreSQL and two MLflow servers: ~30 s

ADMIN = ("admin", "admin-pw-" + "x" * 12)
USERS = "/api/2.0/mlflow/users"


def migrate(tmp_path: Path, env: dict[str, str]) -> None:
    script = tmp_path / "mlflow-migrate"
    script.write_text(render("mlflow-migrate.py", {}))
    result = subprocess.run(
        [sys.executable, str(script)], env={**os.environ, **env}, capture_output=True,
        text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def schema_plan(postgres, env: dict[str, str]) -> SchemaPlan:
    """What bootstrap's schema check reads from this database (its script, for real)."""
    result = subprocess.run(
        # No histories file: the check reads MLflow's migration scripts for them.
        [sys.executable, "-c", CHECK_SCRIPT], input=json.dumps({"uri": postgres.uri(), "histories": ""}),
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return parse_plan(result.stdout)


def start_server(tmp_path: Path, name: str, uri: str, env: dict[str, str]):
    port = free_port("127.0.0.1")
    log_path = tmp_path / f"{name}.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--app-name", "kit-streaming", "--backend-store-uri", uri,
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, **env},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(server, url, log_path)
    return server, url


def logged(tmp_path: Path, name: str, text: str) -> int:
    return (tmp_path / f"{name}.log").read_text().count(text)


def wait_for_log(tmp_path: Path, name: str, text: str, count: int = 1) -> None:
    """Until instance ``name`` has logged ``text`` ``count`` times (its listener's states)."""
    for _ in range(120):
        if logged(tmp_path, name, text) >= count:
            return
        time.sleep(0.25)
    raise AssertionError(f"instance {name} never logged {text!r} {count} times")


def eventually(check, expected, within: float = 2.0):
    """A notification crosses to the other instance in milliseconds; MLflow's cache alone
    would take auth_cache_ttl_seconds (60 s)."""
    deadline = time.monotonic() + within
    while (found := check()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def in_database(postgres, sql: str) -> str:
    return postgres.psql(f"\\connect mlflow\n{sql}\n")


@pytest.fixture
def instances(postgres, tmp_path):
    uri = postgres.uri()
    plugin = artifact_streaming.install_beside(tmp_path / "plugin")
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        render(
            "basic_auth.ini.j2",
            {
                "default_permission": "READ",
                "backend_store_uri": uri,
                "admin_username": ADMIN[0],
                "auth_cache_ttl_seconds": AUTH_CACHE_TTL_SECONDS,
            },
        )
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_BACKEND_STORE_URI": uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "one-key-for-both-instances",
        "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]),
    }
    assert not schema_plan(postgres, env).user_trigger
    migrate(tmp_path, env)
    assert schema_plan(postgres, env).user_trigger
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(start_server(tmp_path, name, uri, env))
        for name in ("a", "b"):
            wait_for_log(tmp_path, name, kit_auth.LISTENING_MESSAGE)
        yield [url for _, url in servers], env
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(timeout=30)


def test_a_user_changed_through_one_instance_is_changed_on_the_other_at_once(
    postgres, instances, tmp_path
):
    (a, b), env = instances

    def as_user(url: str, auth) -> int:
        """What a user notices: an admin-only answer (200), refused (403), or not let in (401)."""
        answer = requests.get(f"{url}{USERS}/get", params={"username": ADMIN[0]}, auth=auth,
                              timeout=30)  # fmt: skip
        return answer.status_code

    def admin(method: str, path: str, body: dict) -> None:
        answer = requests.request(method, f"{a}{USERS}/{path}", json=body, auth=ADMIN, timeout=30)
        assert answer.status_code == 200, answer.text

    bob = ("bob", "bob-first-pw-123")
    admin("POST", "create", {"username": bob[0], "password": bob[1]})
    # Both instances hold bob's verified credential (and, in it, that he is no admin).
    assert as_user(a, bob) == 403 and as_user(b, bob) == 403

    admin("PATCH", "update-admin", {"username": bob[0], "is_admin": True})
    assert eventually(lambda: as_user(b, bob), 200) == 200
    admin("PATCH", "update-admin", {"username": bob[0], "is_admin": False})
    assert eventually(lambda: as_user(b, bob), 403) == 403

    # MLflow alone: B keeps accepting the old password for auth_cache_ttl_seconds (60 s).
    new = (bob[0], "bob-second-pw-456")
    admin("PATCH", "update-password", {"username": bob[0], "password": new[1]})
    assert eventually(lambda: as_user(b, bob), 401) == 401
    assert as_user(b, new) == 403

    admin("DELETE", "delete", {"username": bob[0]})
    assert eventually(lambda: as_user(b, new), 401) == 401

    # A request's admin check reads the cache, not the users table: a change the trigger
    # does not announce (disabled behind the listeners' backs) goes unseen while cached.
    carol = ("carol", "carol-pw-123456")
    admin("POST", "create", {"username": carol[0], "password": carol[1]})
    admin("PATCH", "update-admin", {"username": carol[0], "is_admin": True})
    assert eventually(lambda: as_user(b, carol), 200) == 200
    in_database(postgres, f"ALTER TABLE users DISABLE TRIGGER {kit_auth.TRIGGER};")
    assert not schema_plan(postgres, env).user_trigger  # bootstrap would run mlflow-migrate
    in_database(postgres, "UPDATE users SET is_admin = false WHERE username = 'carol';")
    assert as_user(b, carol) == 200

    # A listener whose connection is lost stops trusting the cache and drops it; one that
    # finds no trigger when it reconnects trusts nothing: each admin check queries, as
    # MLflow's own does, and sees every change at once.
    postgres.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 - a constant
        f"WHERE application_name = '{kit_auth.APPLICATION_NAME}';"
    )
    wait_for_log(tmp_path, "b", f"no trigger {kit_auth.TRIGGER}")
    assert as_user(b, carol) == 403  # B still holds her credential, cached as an admin
    in_database(postgres, "UPDATE users SET is_admin = true WHERE username = 'carol';")
    assert as_user(b, carol) == 200
    in_database(postgres, "UPDATE users SET is_admin = false WHERE username = 'carol';")
    assert as_user(b, carol) == 403

    # mlflow-migrate enables the trigger again; a listener then drops what it cached
    # before (her credential, as an admin), then trusts the cache again; changes, through
    # the API or straight in the database, reach it.
    migrate(tmp_path, env)  # what the next bootstrap runs, its schema check seeing this
    assert schema_plan(postgres, env).user_trigger
    wait_for_log(tmp_path, "b", kit_auth.LISTENING_MESSAGE, count=2)
    assert as_user(b, carol) == 403
    admin("PATCH", "update-admin", {"username": carol[0], "is_admin": True})
    assert eventually(lambda: as_user(b, carol), 200) == 200
    in_database(postgres, "UPDATE users SET is_admin = false WHERE username = 'carol';")
    assert eventually(lambda: as_user(b, carol), 403) == 403
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert ADMIN[1] not in logs and postgres.password not in logs


def test_the_trigger_script_is_the_one_migrate_installs():
    # mlflow-migrate imports it from the kit's wheel, so both come from one place.
    assert "from kit_auth import TRIGGER_SQL" in render("mlflow-migrate.py", {})
    assert kit_auth.TRIGGER_SQL.count(kit_auth.CHANNEL) == 2
