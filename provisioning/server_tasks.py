"""Fabric tasks that run against the MLflow host: bootstrap, status, logs, restart."""

from __future__ import annotations

import sys
import time

from fabric import task
from invoke.exceptions import Exit

from provisioning import offline, plays, render, rolling
from provisioning.session import load_deployment, on_host, print_rows, say, selection
from provisioning.settings.group import group_host
from provisioning.settings.rules import installer_python


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

    With ``hosts`` (a group behind a load balancer) the hosts are bootstrapped one
    at a time: a host about to restart or reload anything is first drained from the
    balancer (/health answers it 503 for drain_seconds), then bootstrapped, proven,
    un-drained and given healthy_seconds to rejoin before the next; a host with
    nothing to change is not drained. A failure stops there, leaves that host
    drained and the rest untouched; run the same command again to resume.

    A host without internet: ``offline_install: true`` in the settings. This machine
    then fetches the Miniforge installer and the lock's wheels for the host (cached
    under offline_cache_dir), uploads them, and the host installs with no index.

    Examples:
      fab bootstrap --stack dev
      fab bootstrap --settings private.yaml              # offline_install: true
      fab bootstrap --settings group.yaml                # hosts: [10.0.1.2, 10.0.2.3]
      fab bootstrap --stack dev --settings access.yaml   # ssh_key_file, ssh_proxy_command
      fab -H admin@203.0.113.10 bootstrap --settings onprem.yaml --accept-new-host-key
    """
    deployment = load_deployment(c, stack, settings)
    started = time.monotonic()
    if deployment.hosts:
        roll(deployment, "bootstrap", accept_new_host_key, plays.bootstrap, stack, settings)
        return
    with on_host(deployment, "bootstrap", accept_new_host_key=accept_new_host_key) as play:
        plays.bootstrap(play, deployment, selection(stack, settings))
    say(
        f"[{deployment.host}] bootstrap finished in {time.monotonic() - started:.1f}s: "
        f"{play.changes} changed, {len(play.reports) - play.changes} ok"
    )
    say(f"tracking URL: {deployment.tracking_url}  (user {deployment.admin_username})")


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def status(c, stack=None, settings=None):
    """Show the server's state: units, MLflow version, uptime, whether each instance hears
    user changes, /health, draining, database and artifact store; for a group (``hosts``),
    one section per host.

    Example:
      fab status --stack dev
    """
    deployment = load_deployment(c, stack, settings)
    for one in [group_host(deployment, h) for h in deployment.hosts] or [deployment]:
        with on_host(one, "status", lock=False) as play:
            rows = plays.status(play.host, one)
        print_rows(one.host, rows)


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


@task(
    name="offline-cache",
    help={
        "stack": "Pulumi stack of the host",
        "settings": "YAML settings file of the host (mlflow_version, miniforge_url, ...)",
        "python": "the host's Python, X.Y (default: the installer's, 3.12 for the default "
        "Miniforge, else python_version)",
        "machine": "the host's CPU as uname -m says it (default x86_64)",
        "glibc": "the host's glibc, 2.N (default 2.36, Debian 12)",
    },
)
def offline_cache(c, stack=None, settings=None, python=None, machine="x86_64", glibc="2.36"):
    """Fetch what offline_install uploads (the Miniforge installer and the lock's wheels
    for the host) into offline_cache_dir now, without the host: to carry the cache to a
    machine without internet, or to have it ready. A bootstrap uses what is there.

    Examples:
      fab offline-cache --settings private.yaml
      fab offline-cache --settings private.yaml --machine aarch64 --glibc 2.31
    """
    deployment = load_deployment(c, stack, settings)
    found = render.server_lock(deployment)
    if found is None:
        raise Exit("offline-cache: install_from_lock is false: no lock to fetch wheels for", 2)
    if python is None:
        python = installer_python(deployment.miniforge_sha256) or deployment.python_version
    cache = offline.cache_dir(deployment.offline_cache_dir)
    started = time.monotonic()
    try:
        target = offline.linux_target(python, machine, glibc)
        installer = offline.installer(deployment.miniforge_url, deployment.miniforge_sha256, cache)
        say(f"installer  {installer} ({installer.stat().st_size / 1e6:.1f} MB)")
        built = offline.wheelhouse(found, target, cache, say)
    except offline.OfflineError as error:
        raise Exit(f"offline-cache: {error}", code=1) from error
    say(f"wheelhouse {built.path} ({len(built.wheels)} wheels, {built.size / 1e6:.0f} MB) "
        f"for {target.key}, in {time.monotonic() - started:.1f}s")  # fmt: skip


def roll(deployment, task, accept_new_host_key, converge, stack, settings) -> None:
    """``converge`` over the group's hosts, one at a time (provisioning.rolling)."""
    started = time.monotonic()
    try:
        results = rolling.roll(
            deployment,
            lambda d: on_host(d, task, accept_new_host_key=accept_new_host_key),
            lambda play, d: converge(play, d, selection(stack, settings)),
            out=say,
            task=task,
        )
    except rolling.RollStopped as stopped:
        raise Exit(str(stopped), code=1) from None
    say(rolling.summary(results, time.monotonic() - started, task))
    say(f"tracking URL: {deployment.tracking_url}  (user {deployment.admin_username})")
