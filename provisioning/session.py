"""What every task against the MLflow host shares: its deployment, and a play on it."""

from __future__ import annotations

import dataclasses
import getpass
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import yaml
from invoke.exceptions import Exit
from paramiko.ssh_exception import BadHostKeyException, SSHException

from provisioning import group_instances, pulumi_cli, stack_access
from provisioning.connection import (
    UnknownHostKey,
    changed_host_key_message,
    connect,
    kit_known_hosts,
    open_when_ready,
)
from provisioning.hostlock import HostBusy, host_lock
from provisioning.offline import OfflineError
from provisioning.play import Play
from provisioning.settings import (
    PATH_FIELDS,
    Deployment,
    SettingsError,
    deployment_from_file,
    deployment_from_outputs,
)
from provisioning.settings.group import group_host
from provisioning.transport import Host, PreflightError, RemoteError
from stacks import contract


def load_deployment(c, stack: str | None, settings: str | None) -> Deployment:
    """The deployment from ``--stack`` outputs, a ``--settings`` file, or both.

    With both, the file holds what the stack cannot know (ssh_key_file,
    extra_ca_certs, TLS files, ...) on top of the outputs; the SSH tunnel (IAP or
    Session Manager) and the server settings the stack holds come from the outputs
    (provisioning.stack_access), unless the file says otherwise.
    ``fab -H user@host`` overrides the host (and the user, when it names one).

    A group stack's servers are listed from its cloud now (provisioning.group_instances),
    each reached through its own tunnel, unless the settings file gives ``hosts``; with
    ``fab -H INSTANCE`` that one server of the group alone.
    """
    if not stack and not settings:
        raise Exit("give --stack NAME, --settings FILE.yaml, or both", code=2)
    overrides: dict = {}
    host = getattr(c, "host", None)
    if host:
        overrides["host"] = host
        if "@" in str(getattr(c, "original_host", "")):
            overrides["ssh_user"] = c.user
        if getattr(c, "port", None):
            overrides["ssh_port"] = int(c.port)
    try:
        if stack:
            if settings:
                overrides = {**settings_overrides(Path(settings)), **overrides}
            outputs = pulumi_cli.stack_outputs(stack)
            if outputs.get(contract.TOPOLOGY) == "group" and "hosts" not in overrides:
                overrides = {**overrides, **_listed_group(outputs, overrides)}
            derived = stack_access.stack_overrides(outputs, overrides)
            deployment = deployment_from_outputs(outputs, derived or None)
            if deployment.hosts and host:
                # fab -H one of the group: that server alone, through its own tunnel.
                deployment = group_host(deployment, deployment.host)
            return deployment
        deployment = deployment_from_file(settings)
        if deployment.hosts and "host" in overrides:
            # fab -H one of the group: that server alone (through its own tunnel, if any).
            deployment = group_host(deployment, overrides["host"])
        return dataclasses.replace(deployment, **overrides) if overrides else deployment
    except (SettingsError, stack_access.StackAccessError) as error:
        raise Exit(f"settings: {error}", code=2) from error
    except (pulumi_cli.PulumiError, OSError, yaml.YAMLError) as error:
        raise Exit(str(error), code=2) from error
    except group_instances.GroupError as error:
        raise Exit(f"group: {error}", code=2) from error


def _listed_group(outputs: dict, overrides: dict) -> dict:
    """``hosts`` and ``host_proxy_commands`` for a group stack, from its cloud's listing;
    the operator's own proxy commands (settings file) win: ``host_proxy_commands`` host
    by host, ``ssh_proxy_command`` for every host."""
    listed = group_instances.group_hosts(outputs)
    derived = {} if overrides.get("ssh_proxy_command") else listed.proxy_commands
    tunnel = stack_access.CLOUD_TUNNEL[outputs[contract.CLOUD]]
    say(
        f"group: {len(listed.hosts)} instances ready, each reached through {tunnel}: "
        + ", ".join(listed.hosts)
    )
    return {
        "hosts": list(listed.hosts),
        "host_proxy_commands": {
            **derived,
            **(overrides.get("host_proxy_commands") or {}),
        },
    }


def settings_overrides(path: Path) -> dict:
    """A settings file's keys as overrides; relative file paths resolve against its folder."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SettingsError(str(path), type(data).__name__, "a mapping of setting names to values")
    for key in PATH_FIELDS & data.keys():
        value = data[key]
        if isinstance(value, str):
            data[key] = str((path.parent / Path(value).expanduser()).resolve())
        elif isinstance(value, list):
            data[key] = [str((path.parent / Path(v).expanduser()).resolve()) for v in value]
    return data


#: How long a VM may serve its image's host key before its first boot installs the pinned one.
PINNED_KEY_GRACE_S = 90


def print_rows(host: str, rows: list[tuple[str, str]]) -> None:
    """A read-only task's answer: the host, then one aligned ``what  state`` line per row."""
    width = max((len(k) for k, _ in rows), default=0)
    print(host)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def say(line: str) -> None:
    print(line, flush=True)


@contextmanager
def on_host(deployment: Deployment, task: str, *, lock: bool = True, accept_new_host_key=False):
    """A play on the deployment's host, once SSH answers; with the host's lock for tasks that change it.

    Failures end as ``Exit`` with the host, the step and the cause, never a traceback.
    A group's deployment (``hosts``) is refused: its tasks go through one server at a
    time (provisioning.rolling), and a task on the first server alone would leave the
    others different (a rotated KEK, a restored database) without saying so.
    """
    if deployment.hosts:
        raise Exit(
            f"{task}: the settings list a group (hosts: {', '.join(deployment.hosts)}); "
            f"fab {task} works on one server: run it for one with `fab -H HOST {task} ...`",
            code=2,
        )
    conn = connect(
        host=deployment.host,
        user=deployment.ssh_user,
        port=deployment.ssh_port,
        key_file=deployment.ssh_key_file,
        known_hosts_file=deployment.known_hosts_file,
        host_key=deployment.ssh_host_key,
        accept_new_host_key=accept_new_host_key,
        proxy_command=deployment.ssh_proxy_command,
    )
    with conn:
        play = Play(Host(conn), out=say)
        # A stack's pinned key is installed by the VM's first boot: wait for it a little.
        grace = PINNED_KEY_GRACE_S if deployment.ssh_host_key else 0
        try:
            open_when_ready(conn, play.host.note, pinned_key_grace=grace)
        except UnknownHostKey as error:
            raise Exit(f"{task}: {error}", code=1) from error
        except BadHostKeyException as error:
            known = (
                "the ssh_host_key setting"
                if deployment.ssh_host_key
                else deployment.known_hosts_file or str(kit_known_hosts())
            )
            raise Exit(f"{task}: {changed_host_key_message(error, known)}", code=1) from error
        except (SSHException, OSError, EOFError) as error:
            where = f"{deployment.ssh_user}@{deployment.host}:{deployment.ssh_port}"
            raise Exit(f"{task}: cannot log in to {where} over SSH: {error}", code=1) from error
        try:
            if lock:
                who = f"fab {task} by {getpass.getuser()}@{socket.gethostname()} since {time.strftime('%H:%M:%S %Z')}"
                with host_lock(play.host, who):
                    yield play
            else:
                yield play
        except HostBusy as error:
            raise Exit(str(error), code=1) from error
        except (RemoteError, PreflightError) as error:
            raise Exit(f"{task} of {deployment.host} stopped: {error}", code=1) from error
        except OfflineError as error:
            raise Exit(
                f"{task} of {deployment.host} stopped at step {play.host.step!r}, on this "
                f"machine: {error}",
                code=1,
            ) from error


def selection(stack: str | None, settings: str | None) -> str:
    """The arguments that select this deployment again, for a command to print."""
    return " ".join(
        part
        for part in (
            f"--stack {stack}" if stack else "",
            f"--settings {settings}" if settings else "",
        )
        if part
    )
