"""The servers' app answers every request exactly as with MLflow's own middlewares
(provisioning/artifact_streaming/kit_asgi.py skips three of them where they only pass a
request on): the same status, headers and body, for tracking calls and auth refusals
through Flask, native FastAPI routes (artifacts, gateway, OpenTelemetry), unprotected
routes, a workspace header, a foreign Host and a cross-origin preflight.

One process builds the real app (``kit_downloads.create_app``: basic-auth, SQLite
stores) with the skipping turned off, sends the requests, turns it on, sends them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from provisioning import artifact_streaming

SCRIPT = textwrap.dedent(
    r"""
    import asyncio, base64, json, os, sys

    import kit_asgi
    install = kit_asgi.install
    kit_asgi.install = lambda app: 0
    from kit_downloads import create_app

    app = create_app()

    def basic(user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    ADMIN = basic("admin", os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"])
    ALICE = basic("alice", "alice-Secret-42")

    async def call(method, path, query="", auth=None, body=None, headers=()):
        raw = json.dumps(body).encode() if body is not None else b""
        sent = []
        all_headers = [(b"host", b"localhost")]
        for name, value in headers:
            all_headers = [h for h in all_headers if h[0] != name.encode()]
            all_headers.append((name.encode(), value.encode()))
        if auth:
            all_headers.append((b"authorization", auth.encode()))
        if body is not None:
            all_headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": query.encode(), "headers": all_headers,
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000)}
        done = False
        async def receive():
            nonlocal done
            if done:
                await asyncio.sleep(3600)
            done = True
            return {"type": "http.request", "body": raw, "more_body": False}
        async def send(message):
            sent.append(message)
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        headers = sorted((k.decode(), v.decode()) for k, v in start.get("headers", ())
                         if k.lower() not in (b"date",))
        data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return {"status": start["status"], "headers": headers, "body": data.decode("latin-1")}

    async def setup():
        created = await call("POST", "/api/2.0/mlflow/users/create", auth=ADMIN,
                             body={"username": "alice", "password": "alice-Secret-42"})
        assert created["status"] == 200, created
        run = await call("POST", "/api/2.0/mlflow/runs/create", auth=ADMIN,
                         body={"experiment_id": "0", "start_time": 1})
        assert run["status"] == 200, run
        return json.loads(run["body"])["run"]["info"]["run_id"]

    def requests(run_id):
        metric = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0}
        return {
            "health": ("GET", "/health", "", None, None, ()),
            "version": ("GET", "/version", "", None, None, ()),
            "server-info": ("GET", "/api/3.0/mlflow/server-info", "", None, None, ()),
            "log-metric admin": ("POST", "/api/2.0/mlflow/runs/log-metric", "", ADMIN, metric, ()),
            "log-metric reader": ("POST", "/api/2.0/mlflow/runs/log-metric", "", ALICE, metric, ()),
            "log-metric anonymous": ("POST", "/api/2.0/mlflow/runs/log-metric", "", None, metric, ()),
            "log-metric wrong password": ("POST", "/api/2.0/mlflow/runs/log-metric", "",
                                          basic("admin", "not-it"), metric, ()),
            "get-run reader": ("GET", "/api/2.0/mlflow/runs/get", f"run_id={run_id}", ALICE, None, ()),
            "search reader": ("POST", "/api/2.0/mlflow/runs/search", "", ALICE,
                              {"experiment_ids": ["0"]}, ()),
            "password of another": ("PATCH", "/api/2.0/mlflow/users/update-password", "", ALICE,
                                    {"username": "admin", "password": "x-Secret-12345"}, ()),
            "artifact anonymous": ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt", "",
                                   None, None, ()),
            "artifact reader": ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt", "",
                                ALICE, None, ()),
            "artifact upload reader": ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt", "",
                                       ALICE, {"a": 1}, ()),
            "gateway anonymous": ("POST", "/gateway/chat/mlflow/invocations", "", None, {}, ()),
            "otel anonymous": ("POST", "/v1/traces", "", None, {}, ()),
            "workspace header": ("GET", "/api/2.0/mlflow/experiments/get", "experiment_id=0",
                                 ADMIN, None, (("x-mlflow-workspace", "team-a"),)),
            "foreign host": ("GET", "/api/2.0/mlflow/experiments/get", "experiment_id=0", ADMIN,
                             None, (("host", "attacker.example"),)),
            "cross-origin preflight": ("OPTIONS", "/api/2.0/mlflow/runs/log-metric", "", None, None,
                                       (("origin", "https://attacker.example"),
                                        ("access-control-request-method", "POST"))),
            "cross-origin post": ("POST", "/api/2.0/mlflow/runs/log-metric", "", ADMIN, metric,
                                  (("origin", "https://attacker.example"),)),
        }

    async def answers(run_id):
        return {name: await call(*request) for name, request in requests(run_id).items()}

    async def main():
        run_id = await setup()
        stock = await answers(run_id)
        replaced = install(app)
        kit = await answers(run_id)
        chain, layer = [], app.middleware_stack
        while layer is not None:
            chain.append(type(layer).__name__)
            layer = getattr(layer, "app", None)
        print(json.dumps({"replaced": replaced, "chain": chain, "stock": stock, "kit": kit}))

    asyncio.run(main())
    """
)


def run_app(tmp_path) -> dict:
    plugin = artifact_streaming.install_beside(tmp_path / "plugin")
    (tmp_path / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\n"
        "admin_username = admin\nadmin_password = admin-Secret-4242\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\nauth_cache_max_size = 100\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(plugin),
        "MLFLOW_KIT_AUTH_APP": "basic-auth",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-Secret-4242",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-key",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{tmp_path}/mlflow.db",
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(tmp_path / "artifacts"),
    }
    env.pop("MLFLOW_ENABLE_WORKSPACES", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_servers_app_answers_as_mlflows_own_middlewares_do(tmp_path):
    result = run_app(tmp_path)
    assert result["replaced"] == 3
    assert result["chain"].count("PassThrough") == 3
    assert "BaseHTTPMiddleware" not in result["chain"]
    stock, kit = result["stock"], result["kit"]
    for name in stock:
        assert kit[name] == stock[name], name
    statuses = {name: answer["status"] for name, answer in kit.items()}
    # What the comparison covers: refusals and successes of each kind, not one of them.
    assert statuses["log-metric admin"] == 200
    assert statuses["log-metric reader"] == 403
    assert statuses["log-metric anonymous"] == 401
    assert statuses["log-metric wrong password"] == 401
    assert statuses["get-run reader"] == 200
    assert statuses["password of another"] == 403
    assert statuses["artifact anonymous"] == 401
    assert statuses["gateway anonymous"] == 401
    assert statuses["health"] == 200
    print(json.dumps(statuses, indent=1))


def test_under_an_mlflow_version_not_read_the_middlewares_stay(monkeypatch, caplog):
    import types

    import mlflow

    from provisioning.artifact_streaming import kit_asgi

    monkeypatch.setattr(mlflow, "__version__", "9.1.0")
    middleware = [object(), object()]
    app = types.SimpleNamespace(user_middleware=list(middleware), middleware_stack="built")
    with caplog.at_level("WARNING"):
        assert kit_asgi.install(app) == 0
    assert app.user_middleware == middleware
    assert app.middleware_stack == "built"
    assert "MLflow 9.1.0: its request middlewares are left as they are" in caplog.text
