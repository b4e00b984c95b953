"""The servers' app answers every request exactly as with MLflow's own middlewares
(provisioning/artifact_streaming/kit_asgi.py skips three of them where they only pass a
request on, and runs Flask through a bridge with one thread hop): the same status, headers
and body, for tracking calls and auth refusals through Flask, the UI's page and its
largest script (past the one-hop size: sent in chunks), native FastAPI routes
(artifacts, gateway, OpenTelemetry), unprotected routes, a workspace header, a foreign
Host and a cross-origin preflight.

Compared: status, headers (but Date and Expires, which name the second they were made
in) and body. One process builds the real app (``kit_downloads.create_app``: basic-auth, SQLite
stores) with the skipping turned off, sends the requests, turns it on, sends them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from provisioning import artifact_streaming
from provisioning.artifact_streaming import kit_asgi

#: The servers' app built in a child process (``kit_asgi.install`` held back as ``install``)
#: and ``call``, one ASGI request to it; bench/framework runs it too.
APP = textwrap.dedent(
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
                         if k.lower() not in (b"date", b"expires"))
        data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return {"status": start["status"], "headers": headers, "body": data.decode("latin-1")}
    """
)

SCRIPT = APP + textwrap.dedent(
    r"""
    async def setup():
        created = await call("POST", "/api/2.0/mlflow/users/create", auth=ADMIN,
                             body={"username": "alice", "password": "alice-Secret-42"})
        assert created["status"] == 200, created
        run = await call("POST", "/api/2.0/mlflow/runs/create", auth=ADMIN,
                         body={"experiment_id": "0", "start_time": 1})
        assert run["status"] == 200, run
        return json.loads(run["body"])["run"]["info"]["run_id"]

    def largest_script():
        import mlflow.server
        scripts = os.path.join(os.path.dirname(mlflow.server.__file__), "js", "build", "static", "js")
        name = max(os.listdir(scripts), key=lambda n: os.path.getsize(os.path.join(scripts, n)))
        return "/static-files/static/js/" + name, os.path.getsize(os.path.join(scripts, name))

    def requests(run_id):
        metric = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0}
        script, _ = largest_script()
        return {
            "ui page": ("GET", "/", "", ADMIN, None, ()),
            "ui script (large)": ("GET", script, "", ADMIN, None, ()),
            "head of a run": ("HEAD", "/api/2.0/mlflow/runs/get", f"run_id={run_id}", ADMIN, None, ()),
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
        again = await answers(run_id)  # the routing answers from the kit's memo now
        chain, layer = [], app.middleware_stack
        while layer is not None:
            chain.append(type(layer).__name__)
            layer = getattr(layer, "app", None)
        mounted = [type(r.app).__name__ for r in app.router.routes if type(r).__name__ == "Mount"]
        print(json.dumps({"replaced": replaced, "chain": chain, "mounted": mounted,
                          "script_bytes": largest_script()[1], "stock": stock, "kit": kit,
                          "again": again}))

    asyncio.run(main())
    """
)


def app_env(tmp_path) -> dict:
    """The environment of a process that builds the servers' app (basic auth, SQLite)."""
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
    return env


def run_app(tmp_path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path, env=app_env(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_servers_app_answers_as_mlflows_own_middlewares_do(tmp_path):
    result = run_app(tmp_path)
    assert result["replaced"] == 4
    assert result["chain"].count("PassThrough") == 3
    assert result["mounted"] == ["OneHopWSGI"]
    assert "BaseHTTPMiddleware" not in result["chain"]
    stock, kit, again = result["stock"], result["kit"], result["again"]
    for name in stock:
        assert kit[name] == stock[name], name
        assert again[name] == stock[name], name
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
    # A body past the one-hop size goes out in chunks, whole.
    assert statuses["ui script (large)"] == 200
    assert result["script_bytes"] > kit_asgi.ONE_HOP_BYTES
    assert len(kit["ui script (large)"]["body"]) == result["script_bytes"]
    print(json.dumps(statuses, indent=1))


def _scope(method, path, host="localhost"):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": [(b"host", host.encode())],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000)}  # fmt: skip


def test_the_routing_memo_answers_as_mlflows_scan_and_stays_bounded(monkeypatch):
    from fastapi import APIRouter, FastAPI
    from mlflow.server.auth import _native_fastapi_routes, _scope_matches_native_route
    from starlette.routing import Host, Mount

    app = FastAPI()

    @app.get("/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}")
    def download(artifact_path: str):
        return artifact_path

    jobs = APIRouter(prefix="/ajax-api/3.0/jobs")

    @jobs.post("/search")
    def search():
        return []

    app.include_router(jobs)
    app.mount("/", lambda scope, receive, send: None)  # the Flask app's place
    native = _native_fastapi_routes(app)
    routes = kit_asgi.FlaskRoutes(native)
    assert routes.memo
    requests = [
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/model.pkl"),  # native
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/model.pkl"),  # a method it lacks
        ("POST", "/ajax-api/3.0/jobs/search"),  # native, in an included router
        ("GET", "/ajax-api/3.0/jobs/search"),
        ("POST", "/api/2.0/mlflow/runs/log-metric"),  # Flask's
        ("GET", "/"),
    ]
    expected = [not _scope_matches_native_route(native, _scope(*r)) for r in requests]
    assert expected == [False, True, False, True, True, True]  # both kinds are covered
    scans = []
    monkeypatch.setattr(
        "mlflow.server.auth._scope_matches_native_route",
        lambda routes, scope: (
            scans.append(scope["path"]) or _scope_matches_native_route(routes, scope)
        ),
    )
    for _ in range(3):
        assert [routes(_scope(*r)) for r in requests] == expected
    assert len(scans) == len(requests)  # each scanned once, then answered from the memo
    # Many paths (ids in them): the memo starts over rather than grow.
    for number in range(3 * kit_asgi.ROUTE_MEMO_SIZE):
        path = f"/api/2.0/mlflow-artifacts/artifacts/{number}/x"
        assert routes(_scope("GET", path)) is False
        assert len(routes.answers) <= kit_asgi.ROUTE_MEMO_SIZE
    assert [routes(_scope(*r)) for r in requests] == expected
    # A Host route matches on a header: no memo, every request scanned as MLflow does.
    app.router.routes.insert(0, Host("internal.example", app=Mount("/", app=lambda *a: None)))
    hosted = kit_asgi.FlaskRoutes(_native_fastapi_routes(app))
    assert not hosted.memo
    log_metric = ("POST", "/api/2.0/mlflow/runs/log-metric")
    assert hosted(_scope(*log_metric, host="internal.example")) is False
    assert hosted(_scope(*log_metric)) is True
    assert hosted.answers == {}


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


class _Body:
    """A WSGI body of ``chunks``, counting what was produced and whether it was closed."""

    def __init__(self, chunks, fail_after=None):
        self.chunks, self.fail_after = chunks, fail_after
        self.produced = self.closed = 0

    def __iter__(self):
        for chunk in self.chunks:
            if self.produced == self.fail_after:
                raise ValueError("the body failed")
            self.produced += 1
            yield chunk

    def close(self):
        self.closed += 1


def _drive(bridge, body, status="200 OK"):
    """Status, headers and body as sent, and the exception the bridge raised."""
    import asyncio

    sent = []

    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), ("X-Kit", "yes")])
        return body

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    error = None
    try:
        asyncio.run(bridge(app)(_scope("GET", "/x"), receive, send))
    except Exception as e:  # noqa: BLE001 - compared between the two bridges
        error = repr(e)
    start = [m for m in sent if m["type"] == "http.response.start"]
    return {
        "start": start,
        "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        "ended": bool(sent) and not sent[-1].get("more_body", False),
        "error": error,
    }


def test_the_bridge_sends_what_mlflows_sends_and_streams_a_long_body():
    from mlflow.server.fastapi_app import _EfficientWSGIMiddleware

    chunk = b"x" * (kit_asgi.ONE_HOP_BYTES * 3 // 4)
    cases = {
        "short": lambda: _Body([b'{"run": ', b'{"id": "1"}}']),
        "empty (204)": lambda: _Body([]),
        "long, streamed": lambda: _Body([chunk] * 10),
        "fails midway": lambda: _Body([chunk] * 4, fail_after=3),
    }
    for name, make in cases.items():
        status = "204 No Content" if name.startswith("empty") else "200 OK"
        stock = _drive(_EfficientWSGIMiddleware, make(), status)
        kit_body = make()
        kit = _drive(kit_asgi.OneHopWSGI, kit_body, status)
        # A failing body: how much of it went out before the failure depends on when the
        # sender task ran, in either bridge; neither ends the response.
        for key in ("start", "ended") if name.startswith("fails") else ("start", "body", "ended"):
            assert kit[key] == stock[key], (name, key)
        # Raised as MLflow's bridge raises it (there in a task group's ExceptionGroup).
        assert (kit["error"] is None) == (stock["error"] is None), name
        assert kit_body.closed == 1, name  # PEP 3333; MLflow's bridge never closes it
    long = _drive(kit_asgi.OneHopWSGI, _Body([chunk] * 10))
    assert len(long["body"]) == 10 * len(chunk)
    # Memory: the kit reads a long body only until it is past the one-hop size (2 chunks
    # of 10), then hands the rest to MLflow's path, which sends chunk by chunk.
    body = _Body([chunk] * 10)
    call = kit_asgi._WSGICall(lambda environ, start: start("200 OK", []) or body, {})
    assert len(call.run()) == 2
    assert body.produced == 2 and call.rest is not None and body.closed == 0
    # A body failing within the one-hop size: MLflow's bridge has sent 200 (the client gets
    # a cut body), the kit's nothing, so the server's error answer (500) goes out instead.
    stock = _drive(_EfficientWSGIMiddleware, _Body([chunk] * 4, fail_after=1))
    kit = _drive(kit_asgi.OneHopWSGI, _Body([chunk] * 4, fail_after=1))
    assert [m["status"] for m in stock["start"]] == [200]
    assert kit["start"] == [] and kit["body"] == b""
    assert "ValueError('the body failed')" in kit["error"]
