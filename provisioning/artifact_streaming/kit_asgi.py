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

The Flask app itself is mounted through MLflow's WSGI bridge (``_EfficientWSGIMiddleware``,
Starlette's ``WSGIResponder`` with the body read in O(n)): per request a task group, a
sender task, a memory stream and one cross-thread call back to the event loop for the
status and for every body chunk. ``OneHopWSGI`` runs the Flask app in the same worker
thread (the same limiter: ``kit_server_site``) and, when the whole body is at most
``ONE_HOP_BYTES`` (every tracking call's JSON), hands status, headers and body back in the
thread's return: one hop there and one back. A longer body is sent as it comes, each
chunk from the thread as Starlette's does, so memory stays bounded by the chunk.

The conditions were read from MLflow 3.17.2 and 3.18.0 (the same code in both); under
another version, or when a middleware is not where they expect it, ``install`` changes
nothing and logs why.
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


#: A response body up to this size goes back with the thread's return, in one message.
ONE_HOP_BYTES = 256 * 1024


class _Response:
    """One request's WSGI call, in the worker thread: its start_response and body."""

    def __init__(self, send):
        self.send = send
        self.start = None
        self.exc_info = None

    def start_response(self, status, response_headers, exc_info=None):
        # As Starlette's WSGIResponder: the first call's status and headers are sent.
        self.exc_info = exc_info
        if self.start is None:
            headers = [
                (name.strip().encode("ascii").lower(), value.strip().encode("ascii"))
                for name, value in response_headers
            ]
            self.start = {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": headers,
            }

    def run(self, app, environ) -> list:
        """The messages to send, or [] when they were sent from here (a long body)."""
        import anyio.from_thread

        body = app(environ, self.start_response)
        try:
            chunks, size = [], 0
            iterator = iter(body)
            for chunk in iterator:
                chunks.append(chunk)
                size += len(chunk)
                if size > ONE_HOP_BYTES:
                    break
            else:
                return [self.start, {"type": "http.response.body", "body": b"".join(chunks)}]
            anyio.from_thread.run(self.send, self.start)
            for chunk in chunks:
                anyio.from_thread.run(
                    self.send, {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            del chunks
            for chunk in iterator:
                anyio.from_thread.run(
                    self.send, {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            anyio.from_thread.run(self.send, {"type": "http.response.body", "body": b""})
            return []
        finally:
            if hasattr(body, "close"):
                body.close()


class OneHopWSGI:
    """A WSGI app under ASGI: the request body read whole (as MLflow's bridge does), the app
    run in a worker thread, a short response handed back in one hop."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
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
        response = _Response(send)
        for message in await anyio.to_thread.run_sync(response.run, self.app, environ):
            await send(message)
        if response.exc_info is not None:
            raise response.exc_info[0].with_traceback(response.exc_info[1], response.exc_info[2])


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
    from mlflow.server.auth import _find_fastapi_validator, is_unprotected_route
    from mlflow.server.handlers import _add_static_prefix
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME
    from starlette.requests import Request
    from starlette.routing import Match, Mount

    native = [route for route in app.router.routes if not isinstance(route, Mount)]
    gateway_prefix = _add_static_prefix("/gateway/")
    workspace_header = WORKSPACE_HEADER_NAME.lower().encode()

    def to_flask(scope) -> bool:
        if _FLASK_KEY not in scope:
            scope[_FLASK_KEY] = not any(route.matches(scope)[0] == Match.FULL for route in native)
        return scope[_FLASK_KEY]

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
    """Put ``OneHopWSGI`` in place of MLflow's bridge at the root mount; 1 when it was."""
    from mlflow.server.fastapi_app import _EfficientWSGIMiddleware
    from starlette.routing import Mount

    for route in app.router.routes:
        if (
            isinstance(route, Mount)
            and route.app is route._base_app
            and isinstance(route.app, _EfficientWSGIMiddleware)
        ):
            route.app = route._base_app = OneHopWSGI(route.app.app)
            return 1
    _log.warning("MLflow's WSGI bridge not found at the root mount; it is left as it is")
    return 0
