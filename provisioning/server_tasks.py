"""Fabric tasks that run against the MLflow host: bootstrap, status, logs, restart."""

from __future__ import annotations

import sys
import time

from fabric import task

from provisioning import plays
from provisioning.session import load_deployment, on_host, print_rows, say, selection


@task(
    help={
        "stack": "Pulumi stack whose outputs describe the host (pulumi stack output --show-secrets)",
        "settings": "YAML settings file: the whole deployment for hosts Pulumi did not create, "
        "or, with --stack, what the stack cannot know (ssh_key_file, ssh_proxy_command, ...)",
        "accept-new-host-key": "first contact with a host whose key nothing vouches for yet: "
        "record the key it offers in the kit's known_hosts (check its fingerprint first)",
    }
)
def bootstrap(c, stack=None, settings=None, accept_new_host_key=False):
    """Turn a fresh Debian 12 host into a TLS, authenticated MLflow tracking server.

    Every step checks the host first and changes only what differs, printing
    ok or changed and its duration; a second run reports zero changes and
    restarts nothing. Secrets go to the host only as 0600 files.

    Examples:
      fab bootstrap --stack dev
      fab bootstrap --stack dev --settings access.yaml   # ssh_key_file, ssh_proxy_command
      fab -H admin@203.0.113.10 bootstrap --settings onprem.yaml --accept-new-host-key
    """
    deployment = load_deployment(c, stack, settings)
    started = time.monotonic()
    with on_host(deployment, "bootstrap", accept_new_host_key=accept_new_host_key) as play:
        plays.bootstrap(play, deployment, selection(stack, settings))
    say(
        f"[{deployment.host}] bootstrap finished in {time.monotonic() - started:.1f}s: "
        f"{play.changes} changed, {len(play.reports) - play.changes} ok"
    )
    say(f"tracking URL: {deployment.tracking_url}  (user {deployment.admin_username})")


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def status(c, stack=None, settings=None):
    """Show the server's state: units, MLflow version, uptime, /health, database and artifact store.

    Example:
      fab status --stack dev
    """
    deployment = load_deployment(c, stack, settings)
    with on_host(deployment, "status", lock=False) as play:
        rows = plays.status(play.host, deployment)
    print_rows(deployment.host, rows)


@task(
    help={
        "stack": "Pulumi stack of the host",
        "settings": "YAML settings file of the host",
        "lines": "how many journal lines (default 100)",
        "follow": "keep following the journal",
    }
)
def logs(c, stack=None, settings=None, lines=100, follow=False):
    """Print the MLflow servers' journal (all instances).

    Example:
      fab logs --stack dev --lines 50 --follow
    """
    deployment = load_deployment(c, stack, settings)
    command = (
        f"journalctl -u 'mlflow-server@*' -u mlflow-migrate.service -n {int(lines)} --no-pager"
    )
    with on_host(deployment, "logs", lock=False) as play:
        if follow:
            play.host.conn.run(f"sudo -n {command} -f", pty=True, hide=False, warn=True)
        else:
            sys.stdout.write(play.host.run(command).stdout)


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def restart(c, stack=None, settings=None):
    """Restart every MLflow server instance, then wait for /health and a client smoke check.

    Example:
      fab restart --stack dev
    """
    deployment = load_deployment(c, stack, settings)
    with on_host(deployment, "restart") as play:
        plays.restart(play, deployment)
