"""The upgrade task: another MLflow version on the server, through the bootstrap play."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fabric import task
from invoke.exceptions import Exit

from provisioning import plays, pulumi_cli
from provisioning.session import load_deployment, on_host, say, selection
from provisioning.settings import SettingsError

_VERSION_LINE = re.compile(r"^mlflow_version:.*$", re.M)


@task(
    help={
        "mlflow-version": "the MLflow version to run, X.Y.Z (e.g. 3.18.0)",
        "stack": "Pulumi stack of the host",
        "settings": "YAML settings file of the host",
    }
)
def upgrade(c, mlflow_version, stack=None, settings=None):
    """Run another MLflow version: a new environment beside the current one, the schema
    checked (a downgrade below the database's schema is refused before anything changes),
    migrated once, the instances switched one at a time behind the health gate; a failed
    switch rolls back to the previous environment. The version is then recorded where
    the deployment reads it (the settings file's mlflow_version, or the stack's
    mlflowVersion), so the next bootstrap keeps it.

    Example:
      fab upgrade --mlflow-version 3.18.0 --settings onprem.yaml
    """
    deployment = load_deployment(c, stack, settings)
    try:
        target = dataclasses.replace(deployment, mlflow_version=mlflow_version)
    except SettingsError as error:
        raise Exit(f"upgrade: {error}", code=2) from error
    if target.hosts:
        # The same rolling bootstrap as fab bootstrap's, host by host behind the balancer.
        from provisioning.server_tasks import roll

        roll(target, "upgrade", False, plays.bootstrap, stack, settings)
    else:
        with on_host(target, "upgrade") as play:
            plays.bootstrap(play, target, selection(stack, settings))
    say(
        f"[{target.host}] MLflow {mlflow_version} running; {_record(stack, settings, mlflow_version)}"
    )


def _record(stack: str | None, settings: str | None, version: str) -> str:
    """Keep the version where the deployment reads it; say where."""
    if settings:
        path = Path(settings)
        text = path.read_text()
        if _VERSION_LINE.search(text) or not stack:
            if _VERSION_LINE.search(text):
                text = _VERSION_LINE.sub(f"mlflow_version: {version}", text)
            else:
                text = text.rstrip("\n") + f"\nmlflow_version: {version}\n"
            path.write_text(text)
            return f"mlflow_version: {version} written to {path}"
    pulumi_cli.config_set(stack, "mlflow-server:mlflowVersion", version)
    return f"stack {stack}'s mlflowVersion set to {version}: run `pulumi up -s {stack}`"
