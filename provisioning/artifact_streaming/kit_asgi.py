"""The auth app's per-request middleware, skipped for a request it would only pass on.

MLflow 3.17's FastAPI app runs three function middlewares (Starlette's
``BaseHTTPMiddleware``) around every request: the permission check of native FastAPI
routes (``mlflow.server.auth``), the gateway's timing and the workspace context
(``mlflow.server.fastapi_app``). For a request that goes to the Flask app (every tracking
call: ``log_metric``, ``log_batch``, ``search_runs``) each of them only calls the next
layer, and Flask runs its own auth and workspace hooks. Each still costs a task, a memory
stream and a wrapped response: together about 1 ms of a request's ~2.2 ms in the
framework on a 2-core machine (README), a tenth of a sequential ``log_metric``.

``install`` wraps each of the three in ``PassThrough``, a plain ASGI middleware that hands
a request straight to the next layer when the middleware would do nothing else with it
(the conditions below, read from each middleware's source), and to the middleware
otherwise. What every request still gets: the host check, CORS, the security headers,
Flask's auth and workspace hooks, and for native routes (artifacts, gateway, OpenTelemetry,
jobs) MLflow's own three middlewares, unchanged.

- permission: passes a request whose route is unprotected, or which no native route
  serves and for which MLflow finds no FastAPI validator; the middleware answers those
  with ``call_next`` (its fail-closed check applies to native routes only).
- gateway timing: passes a request whose path is not under the gateway's prefix, as its
  first line does.
- workspace context: passes a request no native route serves, with workspaces off and no
  workspace header; the middleware would set "no workspace" for it, and Flask's
  ``workspace_before_request_handler`` does the same for a request that has none set.

The Flask app is mounted through MLflow's WSGI bridge (``_EfficientWSGIMiddleware``,
Starlette's ``WSGIResponder`` with the request body read in O(n)): per request a task
group, a sender task, a memory stream and a call from the worker thread back to the event
loop for the status and for every body chunk. ``OneHopWSGI`` runs the Flask app in the
same worker thread (the same limiter) and reads its body there; when the body ends within
``ONE_HOP_BYTES`` (a tracking call's JSON: log_metric, log_batch, get_run) status,
headers and body come back with the thread's result and go out from the event loop: one
hop there and one back. A longer body (a page of hundreds of runs, a file) goes out as
MLflow's bridge sends it (a sender task fed from a worker thread), starting with the part
already read. The size is small on purpose: pages of 500 runs (296 KB) handed back whole
measured both cheaper and dearer than through MLflow's bridge from one run to the next
(README), so they keep MLflow's path. Flask's routes in MLflow answer at once or read a
file; its event streams are FastAPI routes, not bridged.

Two of the conditions ask whether a native route serves the request, which MLflow answers
by matching it against every native route; ``FlaskRoutes`` keeps that answer per method
and path (bounded) while every native route matches on those alone.

The conditions were read from MLflow 3.17.2 and 3.18.0 (the same code in both); under
another version, or when a middleware is not where they expect it, ``install`` changes
nothing; when the bridge is not at the root mount, it is left as it is; each is logged.
"""

from __future__ import annotations

import logging

_log = logging.getLogger(__name__)

#: MLflow versions whose middlewares the conditions were read from.
READ_VERSIONS = ("3.17.2", "3.18.0")
#: A request's "no native route serves it", computed once per request.
_FLASK_KEY = "mlflow_kit.to_flask"

PERMISSION = (
    "mlflow.server.auth",
    "add_fastapi_permission_middleware.<locals>.fastapi_permission_middleware",
)
GATEWAY = (
    "mlflow.server.fastapi_app",
    "add_gateway_timing_middleware.<locals>.gateway_timing_middleware",
)
WORKSPACE = (
    "mlflow.server.fastapi_app",
    "add_fastapi_workspace_middleware.<locals>.workspace_context_middleware",
)


#: A response body that ends within this many bytes goes back with the thread's result.
ONE_HOP_BYTES = 64 * 1024
#: Requests' routing answers kept per app (paths with ids in them are many: past this
#: many the memo starts over).
ROUTE_MEMO_SIZE = 1024


class FlaskRoutes:
    """Whether no native route serves a request, as MLflow's ``_scope_matches_native_route``
    answers it (a scan of every native route: about 0.1 ms a request), kept per request
    kind, method, root path and path. Sound when every native route matches on those alone:
    Starlette's and FastAPI's path routes, mounts and included routers, fixed once the app is
    built; a ``Host`` route (or a kind not known here) matches on headers too, and then every
    request is scanned as MLflow does (``memo`` False)."""

    def __init__(self, native):
        self.native = native
        self.memo = all(_matches_on_path(route) for route in native)
        self.answers: dict[tuple, bool] = {}

    def __call__(self, scope) -> bool:
        if _FLASK_KEY not in scope:
            scope[_FLASK_KEY] = self._answer(scope)
        return scope[_FLASK_KEY]

    def _answer(self, scope) -> bool:
        if not self.memo:
            return self._scan(scope)
        key = (scope["type"], scope.get("method"), scope.get("root_path", ""), scope["path"])
        answer = self.answers.get(key)
        if answer is None:
            answer = self._scan(scope)
            if len(self.answers) >= ROUTE_MEMO_SIZE:
                self.answers.clear()
            self.answers[key] = answer
        return answer

    def _scan(self, scope) -> bool:
        from mlflow.server.auth import _scope_matches_native_route

        return not _scope_matches_native_route(self.native, scope)


def _matches_on_path(route) -> bool:
    """True when ``route.matches`` reads only a request's kind, method and paths: its
    ``matches`` is Starlette's or FastAPI's own for a path route or a mount (a subclass
    that changes only the handler, as MLflow's assistant routes do, keeps it)."""
    from fastapi.routing import APIRoute, APIWebSocketRoute
    from starlette.routing import Mount, Route, WebSocketRoute

    included = getattr(route, "original_router", None)  # FastAPI's included router
    if included is not None:
        return all(_matches_on_path(child) for child in included.routes)
    known = (Route, WebSocketRoute, Mount, APIRoute, APIWebSocketRoute)
    return any(type(route).matches is kind.matches for kind in known)


class _WSGICall:
    """One request's WSGI call, in a worker thread: its status, headers and body."""

    def __init__(self, app, environ):
        self.app = app
        self.environ = environ
        self.start = None
        self.exc_info = None
        self.body = self.rest = None

    def start_response(self, status, response_headers, exc_info=None):
        # As Starlette's WSGIResponder: the first call's status and headers are sent.
        self.exc_info = exc_info
        if self.start is None:
            self.start = {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": [
                    (name.strip().encode("ascii").lower(), value.strip().encode("ascii"))
                    for name, value in response_headers
                ],
            }

    def run(self) -> list:
        """The body's chunks; when it goes past ``ONE_HOP_BYTES``, those read so far, and
        ``rest`` holds the others."""
        body = self.app(self.environ, self.start_response)
        chunks, size = [], 0
        iterator = iter(body)
        try:
            for chunk in iterator:
                if chunk:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > ONE_HOP_BYTES:
                        self.body, self.rest = body, iterator
                        return chunks
        except BaseException:
            _close(body)
            raise
        _close(body)
        return chunks

    def send_rest(self, stream_send) -> None:
        """The rest of a long body, chunk by chunk, as MLflow's bridge sends it."""
        import anyio.from_thread

        try:
            for chunk in self.rest:
                anyio.from_thread.run(
                    stream_send.send,
                    {"type": "http.response.body", "body": chunk, "more_body": True},
                )
            anyio.from_thread.run(stream_send.send, {"type": "http.response.body", "body": b""})
        finally:
            _close(self.body)


def _close(body) -> None:
    # PEP 3333: the server calls the body's close(), whether or not it was read to the end.
    if hasattr(body, "close"):
        body.close()


class OneHopWSGI:
    """A WSGI app under ASGI, as MLflow's ``_EfficientWSGIMiddleware`` mounts it, with one
    thread hop for a response whose body ends within ``ONE_HOP_BYTES``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        import math

        import anyio
        import anyio.to_thread
        from starlette.middleware.wsgi import build_environ

        if scope["type"] != "http":
            # As MLflow's bridge: a WebSocket is refused, other scopes (lifespan) ignored.
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        chunks, more_body = [], True
        while more_body:
            message = await receive()
            if chunk := message.get("body", b""):
                chunks.append(chunk)
            more_body = message.get("more_body", False)
        environ = build_environ(scope, b"".join(chunks))
        del chunks
        call = _WSGICall(self.app, environ)
        chunks = await anyio.to_thread.run_sync(call.run)
        if call.start is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        if call.rest is None:
            await send(call.start)
            await send({"type": "http.response.body", "body": b"".join(chunks)})
        else:
            stream_send, stream_receive = anyio.create_memory_object_stream(math.inf)

            async def sender():
                async with stream_receive:
                    async for message in stream_receive:
                        await send(message)

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(sender)
                async with stream_send:
                    stream_send.send_nowait(call.start)
                    for chunk in chunks:
                        stream_send.send_nowait(
                            {"type": "http.response.body", "body": chunk, "more_body": True}
                        )
                    del chunks
                    await anyio.to_thread.run_sync(call.send_rest, stream_send)
        if call.exc_info is not None:
            raise call.exc_info[0].with_traceback(call.exc_info[1], call.exc_info[2])


class PassThrough:
    """A ``BaseHTTPMiddleware`` around ``dispatch``, skipped when ``passes(scope)``."""

    def __init__(self, app, dispatch, passes):
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self.middleware = BaseHTTPMiddleware(app, dispatch=dispatch)
        self.passes = passes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.passes(scope):
            await self.app(scope, receive, send)
        else:
            await self.middleware(scope, receive, send)


def conditions(app) -> dict[tuple[str, str], object]:
    """When each middleware would only pass a request on, by its (module, qualified name)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.server.asgi_utils import get_routed_asgi_path
    from mlflow.server.auth import (
        _find_fastapi_validator,
        _native_fastapi_routes,
        is_unprotected_route,
    )
    from mlflow.server.handlers import _add_static_prefix
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME
    from starlette.requests import Request

    # MLflow's own split of native routes from the Flask mount (its fail-closed check's).
    to_flask = FlaskRoutes(_native_fastapi_routes(app))
    gateway_prefix = _add_static_prefix("/gateway/")
    workspace_header = WORKSPACE_HEADER_NAME.lower().encode()

    def permission(scope) -> bool:
        path = get_routed_asgi_path(Request(scope))
        if is_unprotected_route(path):
            return True
        return to_flask(scope) and _find_fastapi_validator(path, scope["method"]) is None

    def gateway(scope) -> bool:
        return not get_routed_asgi_path(Request(scope)).startswith(gateway_prefix)

    def workspace(scope) -> bool:
        if MLFLOW_ENABLE_WORKSPACES.get() or not to_flask(scope):
            return False
        return not any(name == workspace_header for name, _ in scope.get("headers", ()))

    return {PERMISSION: permission, GATEWAY: gateway, WORKSPACE: workspace}


def install(app) -> int:
    """Wrap the app's three function middlewares in ``PassThrough``; how many were."""
    import mlflow
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    if mlflow.__version__ not in READ_VERSIONS:
        _log.warning(
            "MLflow %s: its request middlewares are left as they are (read for %s)",
            mlflow.__version__,
            ", ".join(READ_VERSIONS),
        )
        return 0
    found = {}
    for index, entry in enumerate(app.user_middleware):
        dispatch = entry.kwargs.get("dispatch") if entry.cls is BaseHTTPMiddleware else None
        if dispatch is not None:
            found[(dispatch.__module__, dispatch.__qualname__)] = (index, dispatch)
    wanted = conditions(app)
    if set(wanted) - set(found):
        _log.warning(
            "MLflow %s: request middlewares %s not found; all are left as they are",
            mlflow.__version__,
            ", ".join(name for _, name in sorted(set(wanted) - set(found))),
        )
        return 0
    for key, passes in wanted.items():
        index, dispatch = found[key]
        app.user_middleware[index] = Middleware(PassThrough, dispatch=dispatch, passes=passes)
    app.middleware_stack = None  # built again, with these, at the next request
    return len(wanted) + _one_hop_bridge(app)


def _one_hop_bridge(app) -> int:
    """``OneHopWSGI`` in place of MLflow's bridge at the root mount; 1 when it was put."""
    from mlflow.server.fastapi_app import _EfficientWSGIMiddleware
    from starlette.routing import Mount

    for route in app.router.routes:
        if (
            isinstance(route, Mount)
            and route.app is route._base_app
            and type(route.app) is _EfficientWSGIMiddleware
        ):
            route.app = route._base_app = OneHopWSGI(route.app.app)
            return 1
    _log.warning("MLflow's WSGI bridge not found at the root mount; it is left as it is")
    return 0
