"""A group stack's servers as its cloud lists them now, each with the tunnel that reaches it.

A ``topology: group`` stack cannot name its servers (stacks/contract.py, ``hosts``): the
cloud picks them after the deploy and replaces them when they fail. ``fab bootstrap
--stack`` (and every task that takes ``--stack``) therefore asks the cloud's own CLI:

- GCP: ``gcloud compute instance-groups managed list-instances NAME --region R --project P
  --format=json``, a list of ManagedInstance resources; the kit reads ``instance`` (the
  instance's URL, which names its zone and name), ``instanceStatus`` and ``currentAction``
  (Compute Engine API reference, ``regionInstanceGroupManagers.listManagedInstances`` and
  the ``ManagedInstance`` type: ``currentAction`` NONE means "the instance is running, and
  the managed instance group does not have any scheduled actions for this instance").
  Ready: ``instanceStatus`` RUNNING and ``currentAction`` NONE. Each is reached through
  ``gcloud compute start-iap-tunnel INSTANCE 22 --listen-on-stdin --zone Z --project P``.
- AWS: ``aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names NAME
  --region R --output json``: ``AutoScalingGroups[].Instances[]`` with ``InstanceId``,
  ``AvailabilityZone``, ``LifecycleState`` and ``HealthStatus`` (botocore's
  ``autoscaling/2011-01-01`` service model, shape ``Instance``; its examples-1.json shows
  the document). Ready: ``LifecycleState`` InService and ``HealthStatus`` Healthy. Each is
  reached by instance ID through Session Manager (``aws ssm start-session``).

An instance that is not ready (being created, recreated, started, replaced, terminated)
stops the task before any host is touched, naming each instance and its state: bootstrapping
the others would report a finished roll while the group still holds a server that is
not configured, and that server would join the load balancer unconfigured once its
health check passed. The operator waits for the group to settle and runs the command
again. The same holds for fewer instances listed than the group's size.

Every instance serves the one SSH host key the stack generated (stacks/host_key.py, given
to each through the template's metadata or user data): the stack's ``ssh_host_key``
output is pinned for each, as for a single VM.

The CLIs are run through ``RUNNER``, replaced in tests; nothing secret is ever on their
command lines (only the group's name, region, project and instance names).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioning import stack_access
from provisioning.settings.group import MAX_HOSTS, MIN_HOSTS
from stacks import contract

#: Runs one CLI command (argv) and returns its exit code, stdout and stderr.
Runner = Callable[[Sequence[str]], "Completed"]
#: How long one listing may take.
TIMEOUT_S = 120
#: A regional managed instance group's self link (the ``hosts`` output's ``group``).
_MIG_LINK = re.compile(
    r"(?:https://[^/]+/compute/(?:v1|beta|alpha)/)?projects/(?P<project>[^/]+)"
    r"/regions/(?P<region>[^/]+)/instanceGroupManagers/(?P<name>[^/]+)$"
)
#: A ManagedInstance's ``instance`` URL.
_INSTANCE_URL = re.compile(r"/projects/[^/]+/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)$")
GCP_READY = ("RUNNING", "NONE")
AWS_READY = ("InService", "Healthy")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Instance:
    #: The host: the GCP instance name or the AWS instance ID.
    name: str
    zone: str
    #: What the cloud says about it, e.g. ``RUNNING/NONE`` or ``InService/Healthy``.
    state: str
    ready: bool


@dataclass(frozen=True)
class GroupHosts:
    """The group's servers in a stable order (by name), each with its ProxyCommand."""

    hosts: tuple[str, ...]
    proxy_commands: dict[str, str]


class GroupError(RuntimeError):
    """The group could not be listed or is not ready; nothing was touched."""


class CommandFailed(GroupError):
    """A CLI command failed; carries the command, its exit code and its stderr's tail."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, hint: str = ""):
        self.argv, self.returncode, self.stderr = list(argv), returncode, stderr
        tail = "\n".join(stderr.strip().splitlines()[-10:]) or "(no output on stderr)"
        super().__init__(
            f"`{' '.join(argv)}` exited {returncode}:\n{tail}" + (f"\n{hint}" if hint else "")
        )


def run_cli(argv: Sequence[str]) -> Completed:
    """The real runner: the command as given (no shell), its output captured."""
    try:
        done = subprocess.run(  # noqa: S603 - argv from the kit, never a shell
            list(argv), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"no answer within {TIMEOUT_S}s")
    return Completed(done.returncode, done.stdout, done.stderr)


#: The runner every listing uses; tests replace it.
RUNNER: Runner = run_cli

_SETUP = {
    "gcloud": "needs the Google Cloud CLI, logged in (`gcloud auth login`) with "
    "compute.instanceGroupManagers.list on the project and IAP-secured Tunnel User "
    "(roles/iap.tunnelResourceAccessor) for the SSH tunnels",
    "aws": "needs the AWS CLI v2 with credentials for the account (`aws sts "
    "get-caller-identity` answers) and the Session Manager plugin for the SSH tunnels",
}


def _run(argv: Sequence[str], runner: Runner | None) -> Any:
    done = (runner or RUNNER)(argv)
    if done.returncode != 0:
        raise CommandFailed(argv, done.returncode, done.stderr, f"{argv[0]} {_SETUP[argv[0]]}")
    try:
        return json.loads(done.stdout)
    except ValueError as error:
        raise CommandFailed(argv, 0, done.stderr, f"its output is not JSON: {error}") from None


def _group_entry(outputs: Mapping[str, Any]) -> Mapping[str, Any]:
    entries = outputs.get(contract.HOSTS)
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], Mapping):
        raise GroupError(
            f"{contract.HOSTS}: {entries!r}; allowed: one entry (group, region, size, "
            "instances), as a group stack exports it (run `pulumi up` with this kit)"
        )
    entry = entries[0]
    for key in ("group", "region"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise GroupError(f"{contract.HOSTS}[0].{key}: {entry.get(key)!r}; allowed: a name")
    return entry


def list_gcp(entry: Mapping[str, Any], runner: Runner | None = None) -> list[Instance]:
    found = _MIG_LINK.search(entry["group"])
    if not found:
        raise GroupError(
            f"{contract.HOSTS}[0].group: {entry['group']!r}; allowed: a regional managed "
            "instance group's self link (.../projects/P/regions/R/instanceGroupManagers/NAME)"
        )
    argv = [
        "gcloud", "compute", "instance-groups", "managed", "list-instances", found["name"],
        "--region", found["region"], "--project", found["project"], "--format=json",
    ]  # fmt: skip
    listed = _run(argv, runner)
    if not isinstance(listed, list):
        raise CommandFailed(argv, 0, "", "its output is not a JSON list of managed instances")
    out = []
    for item in listed:
        url = _INSTANCE_URL.search(str(item.get("instance", "")))
        if not url:
            raise CommandFailed(argv, 0, "", f"a managed instance without an instance URL: {item}")
        state = (item.get("instanceStatus") or "NOT CREATED", item.get("currentAction") or "?")
        out.append(Instance(url["name"], url["zone"], "/".join(state), state == GCP_READY))
    return out


def list_aws(entry: Mapping[str, Any], runner: Runner | None = None) -> list[Instance]:
    argv = [
        "aws", "autoscaling", "describe-auto-scaling-groups",
        "--auto-scaling-group-names", entry["group"], "--region", entry["region"],
        "--output", "json",
    ]  # fmt: skip
    listed = _run(argv, runner)
    groups = listed.get("AutoScalingGroups") if isinstance(listed, dict) else None
    if not isinstance(groups, list):
        raise CommandFailed(argv, 0, "", "its output has no AutoScalingGroups list")
    if not groups:
        raise GroupError(
            f"`{' '.join(argv)}` found no Auto Scaling group {entry['group']} in "
            f"{entry['region']}: is the stack deployed, and are these the account's credentials?"
        )
    out = []
    for item in groups[0].get("Instances", []):
        state = (item["LifecycleState"], item["HealthStatus"])
        out.append(
            Instance(
                item["InstanceId"], item["AvailabilityZone"], "/".join(state), state == AWS_READY
            )
        )
    return out


def _command(cloud: str, entry: Mapping[str, Any]) -> str:
    if cloud == "gcp":
        return (
            f"gcloud compute instance-groups managed list-instances {_command_name(entry)} "
            f"--region {entry['region']}"
        )
    return (
        f"aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "
        f"{entry['group']} --region {entry['region']}"
    )


def group_hosts(outputs: Mapping[str, Any], runner: Runner | None = None) -> GroupHosts:
    """The group stack's servers, listed now, sorted by name, each with its ProxyCommand.

    Raises GroupError (naming the command, its exit code and stderr, or each instance
    that is not ready) before any host is touched.

    Example: ``group_hosts(pulumi_cli.stack_outputs("prod")).hosts`` ->
    ``("mlflow-group-1x2c", "mlflow-group-9kq0")``.
    """
    cloud = outputs.get(contract.CLOUD)
    if cloud not in ("gcp", "aws"):
        raise GroupError(f"{contract.CLOUD}: {cloud!r}; allowed: gcp or aws for a group stack")
    entry = _group_entry(outputs)
    instances = (list_gcp if cloud == "gcp" else list_aws)(entry, runner)
    instances.sort(key=lambda i: i.name)
    listed = _command(cloud, entry)
    size = entry.get("size")
    waiting = [i for i in instances if not i.ready]
    if not instances:
        raise GroupError(
            f"the group {entry['group']} has no instances (`{listed}` lists none): "
            f"it keeps {size} once the cloud has created them; wait, then run this again"
        )
    if waiting:
        wait = (
            f"gcloud compute instance-groups managed wait-until {_command_name(entry)} "
            f"--stable --region {entry['region']}"
            if cloud == "gcp"
            else f"`{listed}` shows every instance InService and Healthy"
        )
        ready = GCP_READY if cloud == "gcp" else AWS_READY
        raise GroupError(
            f"{len(waiting)} of the group's {len(instances)} instances are not ready ("
            + ", ".join(f"{i.name} in {i.zone}: {i.state}" for i in waiting)
            + f"; ready is {'/'.join(ready)}). Nothing was touched: a roll over the others "
            f"would leave the group with a server that is not configured. Wait until {wait}, "
            "then run this again"
        )
    if isinstance(size, int) and len(instances) < size:
        raise GroupError(
            f"the group {entry['group']} keeps {size} instances but `{listed}` lists "
            f"{len(instances)} ({', '.join(i.name for i in instances)}): the cloud is still "
            "replacing one; nothing was touched. Wait, then run this again"
        )
    if not MIN_HOSTS <= len(instances) <= MAX_HOSTS:
        raise GroupError(
            f"the group {entry['group']} has {len(instances)} ready instance(s); a rolling "
            f"bootstrap needs {MIN_HOSTS}-{MAX_HOSTS} (one drains while the others serve)"
        )
    tunnel = stack_access.CLOUD_TUNNEL[cloud]
    proxies = {}
    for instance in instances:
        one = {**outputs, contract.VM_ID: instance.name, contract.VM_ZONE: instance.zone}
        one[contract.REGION] = outputs.get(contract.REGION) or entry["region"]
        command = stack_access.proxy_command(one, tunnel)
        assert command is not None  # a named tunnel always gives a command
        proxies[instance.name] = command
    return GroupHosts(tuple(i.name for i in instances), proxies)


def _command_name(entry: Mapping[str, Any]) -> str:
    link = _MIG_LINK.search(entry["group"])
    return link["name"] if link else entry["group"]
