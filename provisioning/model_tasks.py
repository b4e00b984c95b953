"""Fabric tasks for model endpoints: serve-model, unserve-model, models."""

from __future__ import annotations

import time

from fabric import task
from invoke.exceptions import Exit

from provisioning import plays
from provisioning.session import load_deployment, on_host, print_rows, say
from provisioning.settings.rules import MODEL_NAME, MODEL_NAME_ALLOWED
from provisioning.steps.models import Request

HOST_HELP = {"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"}


def _name(task_name: str, name: str) -> str:
    if not MODEL_NAME.fullmatch(name or ""):
        raise Exit(
            f"{task_name}: model name {name!r}: the kit serves names of {MODEL_NAME_ALLOWED}",
            code=2,
        )
    return name


@task(
    help={
        "name": "registered model name",
        "version": "the model version to serve (or --alias)",
        "alias": "serve the version this alias points at (e.g. champion)",
        "follow-alias": "with --alias: keep following it; a timer on the host serves the "
        "version the alias points at within model_follow_seconds of a move (in the UI too)",
        **HOST_HELP,
    }
)
def serve_model(c, name, version=None, alias=None, follow_alias=False, stack=None, settings=None):
    """Serve a registered model version at https://<host>/models/<name>/invocations.

    Behind the server's TLS and MLflow's own auth (a user who may read the model may
    call it), on the same VM, without a new firewall rule. The version is downloaded
    once, its Python environment built once (or the server's used, when it meets the
    model's requirements), and run as single-worker scoring servers on loopback
    (model_workers, model_memory_mb; refused when the VM has no room beside the
    tracking servers). Serving another version, or the version an alias now points at,
    switches blue/green: no request is lost. A model whose environment cannot be
    built fails with pip's or conda's error and changes no running endpoint.

    Examples:
      fab serve-model --name demo-classifier --alias champion --stack dev
      fab serve-model --name demo-classifier --version 3 --settings onprem.yaml
      fab serve-model --name demo-classifier --alias champion --follow-alias --stack dev
    """
    _name("serve-model", name)
    if bool(version) == bool(alias):
        raise Exit("serve-model: give --version V or --alias A (one of them)", code=2)
    if follow_alias and not alias:
        raise Exit("serve-model: --follow-alias follows an --alias", code=2)
    if version and not str(version).isdigit():
        raise Exit(f"serve-model: --version {version!r}: a model version number", code=2)
    request = Request(name, str(version or ""), alias or "", bool(follow_alias))
    deployment = load_deployment(c, stack, settings)
    started = time.monotonic()
    with on_host(deployment, "serve-model") as play:
        plays.serve_model(play, deployment, request)
    url = f"{deployment.tracking_url}/models/{name}/invocations"
    say(
        f"[{deployment.host}] serve-model finished in {time.monotonic() - started:.1f}s: "
        f"{play.changes} changed, {len(play.reports) - play.changes} ok"
    )
    say(f"endpoint: {url}  (user {deployment.admin_username}, or any user who may read {name})")
    say(
        f"try: curl -u {deployment.admin_username}:$MLFLOW_TRACKING_PASSWORD -H 'Content-Type: "
        f"application/json' -d '{{\"inputs\": [[...]]}}' {url}"
    )


@task(help={"name": "registered model name", **HOST_HELP})
def unserve_model(c, name, stack=None, settings=None):
    """Stop serving a model: out of nginx, drained, stopped; its files removed.

    Example:
      fab unserve-model --name demo-classifier --stack dev
    """
    _name("unserve-model", name)
    deployment = load_deployment(c, stack, settings)
    with on_host(deployment, "unserve-model") as play:
        plays.unserve_model(play, deployment, name)
    say(f"[{deployment.host}] unserve-model {name}: {play.changes} changed")


@task(help=HOST_HELP)
def models(c, stack=None, settings=None):
    """List the model endpoints: state, the version or alias asked for, the version its
    processes loaded, environment, uptime, last request and URL. Reads only.

    Example:
      fab models --stack dev
    """
    deployment = load_deployment(c, stack, settings)
    with on_host(deployment, "models", lock=False) as play:
        rows = plays.models_status(play.host, deployment)
    print_rows(deployment.host, rows)
