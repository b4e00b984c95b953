# Managed by fab bootstrap: do not edit on the VM, edit templates/ in the kit.
# The server instances' sitecustomize (their unit puts this directory on PYTHONPATH):
# at most MLFLOW_KIT_WSGI_THREADS requests of one instance run MLflow's Flask app at
# once; the others wait for a thread, in the order they came.
#
# Why: MLflow 3.17's SqlAlchemyStore.log_batch holds one connection of the tracking
# pool while it takes a second (it opens a session, then _log_metrics opens its own).
# With as many concurrent log_batch calls as the pool holds (MLFLOW_SQLALCHEMYSTORE_
# POOL_SIZE + _MAX_OVERFLOW), each holds one connection and waits for a second that never
# comes free: after SQLAlchemy's 30 s pool timeout every one fails with "QueuePool limit
# ... reached" (a 400). uvicorn runs the Flask app through anyio's worker threads, 40 by
# default; the kit renders the limit as half the pool, so every request can hold two.
#
# Only the default limiter is changed, through anyio.to_thread.run_sync (what MLflow's
# WSGI bridge and Starlette call): the artifact routes stream in asyncio's own threads
# and are not limited by it.
import os

_LIMIT = os.environ.get("MLFLOW_KIT_WSGI_THREADS", "")
_THREADS = int(_LIMIT) if _LIMIT.isdigit() else 0

if _THREADS > 0:
    import anyio.to_thread

    _run_sync = anyio.to_thread.run_sync

    async def run_sync(func, *args, limiter=None, **options):
        if limiter is None:
            limiter = anyio.to_thread.current_default_thread_limiter()
            if limiter.total_tokens != _THREADS:
                limiter.total_tokens = _THREADS
        return await _run_sync(func, *args, limiter=limiter, **options)

    anyio.to_thread.run_sync = run_sync
