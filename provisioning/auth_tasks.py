"""Fabric tasks about who may do what: ``fab users``."""

from __future__ import annotations

from fabric import task

from provisioning.session import load_deployment, on_host, say
from provisioning.steps import permissions


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def users(c, stack=None, settings=None):
    """List who has what: every user's and group's grants on experiments and registered
    models, as MLflow's auth API reports them (with auth oidc also what a user gets through
    a group or the default), the ones fab bootstrap made marked so.

    Example:
      fab users --settings onprem.yaml
    """
    deployment = load_deployment(c, stack, settings)
    with on_host(deployment, "users", lock=False) as play:
        rows = permissions.listing(play.host, deployment)
    say(f"{deployment.host}: auth {deployment.auth}, {len(rows)} grant(s)")
    header = ["who", "resource", "name", "permission", "through"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        say("  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
