"""Streaming downloads of proxied artifacts from S3 and GCS: the MLflow app ``kit-streaming``
(entry point group ``mlflow.app``), which is the auth app named by ``MLFLOW_KIT_AUTH_APP``
(``basic-auth`` by default) with one route replaced.

Under uvicorn, MLflow 3.17 answers ``GET /api/2.0/mlflow-artifacts/artifacts/<path>`` (and
its ``/ajax-api`` twin) in FastAPI (``mlflow/server/artifact_router.py``): it downloads the
whole object into a temporary directory, then sends it. The repository has no hook to stream
a download (``download_artifacts`` must produce a file), so the route itself is replaced:

- ``mlflow server --app-name X`` loads the ``mlflow.app`` entry point X and, when it is a
  function, runs it as uvicorn's app factory in the worker (``mlflow/server/__init__.py``
  ``_find_app``, ``_is_factory``). ``create_app`` below runs the auth app's own factory
  (``mlflow.server.auth:create_app``: under uvicorn it returns the FastAPI app with the
  permission middleware) and puts this module's routes for the two paths first in the
  router, where Starlette's first-match routing finds them before the built-in ones.
- Authentication and permissions are untouched: ``add_fastapi_permission_middleware`` is
  app-level middleware, run for every request before routing, and it finds the validator
  by path and method (``_find_fastapi_validator``), the same for this route as for the
  built-in one. The test checks a request without credentials is refused.
- Anything this route does not stream (no ``open_artifact`` on the repository, serving
  disabled) goes to the built-in endpoint, unchanged.

The auth app's user changes are listened for (``kit_auth``): every instance drops a changed
user's cached credentials at once, and a request's admin check is answered from that cache.

Rejected: a repository whose ``download_artifacts`` hands back a named pipe (the Flask
fallback sends a file by its size, so a pipe breaks it); patching MLflow's files.

What a different app name costs: ``mlflow server`` does two things only for the name
``basic-auth``, before it starts the worker: it creates the admin user (the auth app's
factory then does it in the worker instead: the same with one worker) and, when job
execution is on, it shares a gateway token between the worker and the job runners
(without it, jobs that call the gateway are not authenticated).

Memory per download: S3, the chunk read from the bucket and the one being sent
(``DOWNLOAD_CHUNK_BYTES``, 8 MiB); GCS, one GET whose bytes wait in at most
``PIPE_PIECES`` (2) such chunks, one being filled and one being sent (about 40 MiB);
nothing is written to disk.
"""

from __future__ import annotations

import importlib
import json
import os
import types

AUTH_APP_ENV = "MLFLOW_KIT_AUTH_APP"
ROUTES = (
    "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
)


async def download_artifact(artifact_path: str):
    import asyncio

    from fastapi.responses import JSONResponse, StreamingResponse
    from mlflow.exceptions import MlflowException
    from mlflow.server import artifact_router
    from mlflow.utils.mime_type_utils import _guess_mime_type
    from mlflow.utils.uri import validate_path_is_safe

    if not artifact_router._is_serving_proxied_artifacts():
        return await artifact_router.download_artifact(artifact_path)
    repository = artifact_router._get_artifact_repo()
    if not hasattr(repository, "open_artifact"):
        return await artifact_router.download_artifact(artifact_path)
    try:
        scoped = artifact_router._get_workspace_scoped_path(validate_path_is_safe(artifact_path))
        size, chunks = await asyncio.to_thread(repository.open_artifact, scoped)
    except MlflowException as error:
        return JSONResponse(
            status_code=error.get_http_status_code(), content=json.loads(error.serialize_as_json())
        )
    filename = os.path.basename(artifact_path)
    return StreamingResponse(
        chunks,  # a plain iterator: Starlette reads it in its thread pool
        headers={
            "Content-Type": _guess_mime_type(filename),
            "Content-Disposition": artifact_router._content_disposition(filename),
            "Content-Length": str(size),
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_streaming_downloads(app) -> None:
    """Put the streaming download route before the built-in one of a FastAPI app."""
    from fastapi import APIRouter

    router = APIRouter()
    for path in ROUTES:
        router.add_api_route(path, download_artifact, methods=["GET"])
    app.router.routes[:0] = router.routes


def create_app():
    """The auth app named by MLFLOW_KIT_AUTH_APP, downloads streamed."""
    from fastapi import FastAPI
    from mlflow.server import _find_app

    name = os.environ.get(AUTH_APP_ENV, "basic-auth")
    if name == "kit-streaming":
        raise ValueError(f"{AUTH_APP_ENV}=kit-streaming: name the auth app it wraps")
    module, attribute = _find_app(name).rsplit(":", 1)
    target = getattr(importlib.import_module(module), attribute)
    app = target() if isinstance(target, types.FunctionType) else target
    if isinstance(app, FastAPI):
        import kit_asgi

        add_streaming_downloads(app)
        kit_asgi.install(app)
    if name == "basic-auth":
        import kit_auth

        kit_auth.install()
    return app
