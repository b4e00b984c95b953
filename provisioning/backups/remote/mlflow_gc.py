"""``mlflow gc`` for the server, as mlflow-gc.service runs it (on the VM).

Installed as /opt/mlflow/bin/mlflow-gc. MLflow's own command runs in this process, so
the backend URI (with its password) never appears in a process list: it comes from the
EnvironmentFile (MLFLOW_BACKEND_STORE_URI) and goes to the command as an argument in
memory. With proxied artifacts the artifacts of a removed run are deleted through the
server, so MLFLOW_TRACKING_URI points at nginx on this host (loopback) and the admin's
credentials from the same file sign the requests.

What the run did is written to /var/lib/mlflow/gc-last.json for ``fab status``.
Exit status: 0 done, 1 failed.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import sys

import kit_storage

STATE = "/var/lib/mlflow/gc-last.json"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarize(output: str) -> dict:
    """How many runs and logged models ``mlflow gc`` says it removed."""
    return {
        "runs": output.count("Run with ID "),
        "logged_models": output.count("Logged model with ID "),
    }


def write_state(state: dict, path: str = STATE) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def run_gc(older_than: str, uri: str) -> tuple[str, str | None]:
    """Run ``mlflow gc`` in this process; (what it printed, an error message or None)."""
    import click
    from mlflow.cli import gc

    out = io.StringIO()
    error = None
    with contextlib.redirect_stdout(out):
        try:
            gc.main(
                args=["--older-than", older_than, "--backend-store-uri", uri],
                standalone_mode=False,
                prog_name="mlflow gc",
            )
        except click.ClickException as exc:
            error = exc.format_message()
        except SystemExit as exc:
            if exc.code not in (0, None):
                error = f"exit status {exc.code}"
        except Exception as exc:  # noqa: BLE001 - reported, with the runs removed so far
            error = f"{type(exc).__name__}: {exc}"
    return out.getvalue(), error


def main() -> int:
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not uri:
        print("mlflow-gc: MLFLOW_BACKEND_STORE_URI is not set", file=sys.stderr)
        return 1
    older_than = os.environ.get("MLFLOW_KIT_GC_OLDER_THAN", "30d")
    os.environ.setdefault("MLFLOW_TRACKING_URI", "https://127.0.0.1")
    # nginx on this host; its certificate names the public host, not the loopback.
    os.environ.setdefault("MLFLOW_TRACKING_INSECURE_TLS", "true")
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = kit_storage.admin_password()
    started = now()
    output, error = run_gc(older_than, uri)
    sys.stdout.write(output)
    state = {
        "started": started,
        "finished": now(),
        "older_than": older_than,
        "result": "failed" if error else "success",
        **summarize(output),
    }
    if error:
        state["error"] = error[-500:]
        print(f"mlflow-gc: failed: {error}", file=sys.stderr)
    write_state(state)
    print(
        f"mlflow-gc: {state['runs']} run(s) and {state['logged_models']} logged model(s) "
        f"deleted more than {older_than} ago removed",
        file=sys.stderr,
    )
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
