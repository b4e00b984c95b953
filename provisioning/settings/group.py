"""A group of servers behind a load balancer: ``hosts``, and what the rolling bootstrap needs.

Every server of a group shares one database and must hold the same Flask secret key
(CSRF tokens issued by one instance are checked by another), the same KEK passphrase
(gateway secrets encrypted by one are decrypted by another) and the same admin
password; left unset, each VM would generate its own. They are therefore required
here, before any host is touched.

``drain_seconds`` defaults to the longer of the two clouds' "unhealthy, then drained"
times as the stacks configure them (stacks/gcp/group.py, stacks/aws/balancer.py):
GCP checks every 10 s and needs 3 failures (30 s), then drains connections for 30 s
(60 s); AWS checks every 15 s and needs 3 failures (45 s), then waits the 30 s
deregistration delay (75 s). ``healthy_seconds``: 2 successes, 10 s (GCP) or 15 s (AWS)
apart, so 30 s.

The hosts share one database, so each sizes its connection pools for the whole group
(``group_size``, carried by group_host(); provisioning.sizing.sizing_slots) and stays
within its share while it restarts, so the group's sum fits at every moment of a
roll. A roll that changes the share itself (more hosts, a smaller db_max_connections)
is the exception: until the last host has rolled, the hosts not yet rolled keep their
older, larger pools. Grow a group by rolling the existing hosts first and listing the
new ones last in ``hosts``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from provisioning.settings.rules import check_host, check_int
from provisioning.settings.secret import MISSING, SettingsError
from provisioning.sizing import (
    DB_RESERVED_CONNECTIONS,
    DEFAULT_DB_MAX_CONNECTIONS,
    instances_within,
    least_per_instance,
)

if TYPE_CHECKING:
    from provisioning.settings.deployment import Deployment

MIN_HOSTS, MAX_HOSTS = 2, 10
MAX_DRAIN_SECONDS = 900
MAX_HEALTHY_SECONDS = 600
SHARED_SECRETS = ("flask_secret_key", "kek_passphrase", "admin_password")


def validate_group(d: Deployment) -> None:
    check_int("drain_seconds", d.drain_seconds, 0, MAX_DRAIN_SECONDS)
    check_int("healthy_seconds", d.healthy_seconds, 0, MAX_HEALTHY_SECONDS)
    if isinstance(d.hosts, list):
        object.__setattr__(d, "hosts", tuple(d.hosts))
    if not d.hosts:
        if not isinstance(d.hosts, tuple):
            raise SettingsError("hosts", d.hosts, f"a list of {MIN_HOSTS}-{MAX_HOSTS} hosts")
        if d.host_proxy_commands:
            raise SettingsError(
                "host_proxy_commands", d.host_proxy_commands, "set only together with hosts"
            )
        # One host of a group (group_host()), or a single server: never from settings.
        if d.group_size != 1:
            check_int("group_size", d.group_size, MIN_HOSTS, MAX_HOSTS)
        return
    allowed = f"a list of {MIN_HOSTS}-{MAX_HOSTS} distinct hosts (DNS names or IP addresses)"
    if not isinstance(d.hosts, tuple) or not MIN_HOSTS <= len(d.hosts) <= MAX_HOSTS:
        raise SettingsError("hosts", d.hosts, allowed)
    for index, host in enumerate(d.hosts):
        if not isinstance(host, str) or not host.strip():
            raise SettingsError(f"hosts[{index}]", host, "a non-empty string")
        check_host(f"hosts[{index}]", host)
    seen = [h for i, h in enumerate(d.hosts) if h in d.hosts[:i]]
    if seen:
        raise SettingsError("hosts", d.hosts, f"{allowed}; {seen[0]} is listed twice")
    _check_proxy_commands(d)
    if d.host not in d.hosts:
        raise SettingsError("host", d.host, "one of hosts, or unset when hosts is given")
    if d.public_host is None:
        # Its default, the first host, is never what a group's users reach.
        raise SettingsError(
            "public_host",
            MISSING,
            "the load balancer's name (its domain or address) when hosts is given: the "
            "servers accept requests only for the names they know",
        )
    object.__setattr__(d, "group_size", len(d.hosts))
    for name in SHARED_SECRETS:
        if getattr(d, name) is None:
            raise SettingsError(
                name,
                MISSING,
                "set when hosts is given: every server of a group must hold the same "
                + ", ".join(SHARED_SECRETS)
                + " (the stack outputs of the same names, or the settings file), "
                "else each would generate its own",
            )


def _check_proxy_commands(d: Deployment) -> None:
    commands = d.host_proxy_commands
    allowed = "a map of hosts (of the hosts setting) to their SSH ProxyCommand (one line)"
    if not isinstance(commands, dict):
        raise SettingsError("host_proxy_commands", commands, allowed)
    for host, command in commands.items():
        if host not in d.hosts:
            raise SettingsError(f"host_proxy_commands[{host!r}]", command, allowed)
        if not isinstance(command, str) or not command.strip() or "\n" in command:
            raise SettingsError(f"host_proxy_commands[{host!r}]", command, allowed)


def check_group_database(d: Deployment) -> None:
    """Every host of a group opens its own pools on the one database: refuse a group
    whose hosts cannot each run their instances within their share of its limit
    (provisioning.sizing.instances_within counts the whole group). Hosts sized from
    their cores are checked at bootstrap (provisioning.steps.servers.ports_for)."""
    hosts = d.group_size
    if hosts == 1:
        return
    connections = d.db_max_connections or DEFAULT_DB_MAX_CONNECTIONS
    wanted = 1 if d.job_execution else (d.server_instances or 1)
    fits = instances_within(connections, d.job_execution, hosts)
    if fits >= wanted:
        return
    each = least_per_instance(d.job_execution)
    why = (
        f"db_max_connections {connections} ({DB_RESERVED_CONNECTIONS} kept free) is "
        f"divided among every host of the group: each instance needs {each} connections, "
        "and a host running one instance counts two (its surge instance restarts beside it)"
    )
    if wanted > 1 and fits:
        raise SettingsError(
            "server_instances", d.server_instances, f"at most {fits} with {hosts} hosts: {why}"
        )
    fitting = [
        n
        for n in range(MIN_HOSTS, hosts)
        if instances_within(connections, d.job_execution, n) >= wanted
    ]
    allowed = f"at most {fitting[-1]} hosts" if fitting else "no group at all"
    raise SettingsError(
        "hosts" if d.hosts else "group_size",
        list(d.hosts) if d.hosts else hosts,
        f"{allowed} running {wanted} instance(s) each, or a larger db_max_connections: {why}",
    )


def group_host(d: Deployment, host: str) -> Deployment:
    """The deployment of one server of the group ``d``: ``host`` (reached through its own
    ProxyCommand when it has one), and no ``hosts``; it keeps the group's size, so the
    host sizes its database pools for the whole group."""
    proxy = d.host_proxy_commands.get(host, d.ssh_proxy_command)
    return dataclasses.replace(
        d,
        host=host,
        hosts=(),
        ssh_proxy_command=proxy,
        host_proxy_commands={},
        group_size=len(d.hosts) or d.group_size,
    )
