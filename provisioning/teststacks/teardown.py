"""Tear a stack down and prove, with the cloud's own APIs, that nothing of it is left.

Every step is safe to repeat, so an interrupted or half-failed teardown is
finished by running it again:

1. read the stack's config; refuse prod-class stacks unless allowed;
2. ``pulumi destroy`` (transient failures retried with backoff, later attempts
   refresh first so resources already gone do not stop it);
3. ``pulumi stack rm`` (a stack that is already gone is fine);
4. list every resource still carrying the stack's label/tag, polling for a
   while because cloud listings lag deletions; whatever remains is a leftover.

When the stack no longer exists (a previous run removed it), steps 2 and 3 are
skipped and only the check runs, which then needs the cloud from the caller.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from provisioning import pulumi_cli
from provisioning.pulumi_cli import PulumiError, StackNotFound
from provisioning.teststacks import aws as aws_api
from provisioning.teststacks import gcp as gcp_api
from provisioning.teststacks.leftovers import Leftover
from stacks import contract, naming
from stacks.keys import PROJECT

Say = Callable[[str], None]


class TeardownRefused(RuntimeError):
    """The stack may not be torn down as asked (prod-class, or not enough to go on)."""


class TeardownFailed(RuntimeError):
    """Pulumi could not finish; running teardown again continues where it stopped."""


@dataclass
class Timing:
    """How hard to try; tests shrink these to zero."""

    attempts: int = 4
    backoff: float = 10.0
    #: How long leftovers may take to disappear from cloud listings.
    settle: float = 180.0
    poll: float = 15.0
    sleep: Callable[[float], None] = field(default=time.sleep)


class Finder:
    """Lists (and removes) resources by the kit's labels in one cloud account/project."""

    cloud: str

    def find(self, wanted: dict[str, str | None]) -> list[Leftover]:
        raise NotImplementedError

    def remove(self, item: Leftover) -> None:
        raise NotImplementedError


class AwsFinder(Finder):
    cloud = "aws"

    def __init__(self, region: str, endpoint_url: str | None = None):
        self.api = aws_api.Aws(region, endpoint_url=endpoint_url)

    def find(self, wanted):
        return aws_api.find(self.api, wanted)

    def remove(self, item):
        aws_api.remove(self.api, item)


class GcpFinder(Finder):
    cloud = "gcp"

    def __init__(self, project: str, http=None):
        self.project = project
        self._http = http

    @property
    def http(self):
        if self._http is None:
            self._http = gcp_api.session()
        return self._http

    def find(self, wanted):
        return gcp_api.find(self.http, self.project, wanted)

    def remove(self, item):
        gcp_api.remove(self.http, item)


@dataclass
class Target:
    """Where a stack's resources live, from its config or the caller."""

    cloud: str
    region: str | None = None
    project: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, str], cloud: str | None = None) -> Target:
        return cls(
            cloud=cloud or config.get(f"{PROJECT}:cloud", ""),
            region=config.get("aws:region"),
            project=config.get("gcp:project"),
        )

    def finder(self) -> Finder:
        """A finder for this target; region/project fall back to the usual variables."""
        if self.cloud == "aws":
            region = (
                self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            )
            if not region:
                raise TeardownRefused("no AWS region: set aws:region, AWS_REGION or pass --region")
            return AwsFinder(region)
        if self.cloud == "gcp":
            project = (
                self.project
                or os.environ.get("GOOGLE_CLOUD_PROJECT")
                or os.environ.get("CLOUDSDK_CORE_PROJECT")
            )
            if not project:
                raise TeardownRefused(
                    "no GCP project: set gcp:project, GOOGLE_CLOUD_PROJECT or pass --project"
                )
            return GcpFinder(project)
        raise TeardownRefused(f"unknown cloud {self.cloud!r}; pass --cloud gcp or --cloud aws")


def stack_label(stack: str) -> str:
    """The label value a stack's resources carry (``pulumi.get_stack()`` has no org prefix)."""
    return naming.stack_label(stack.rsplit("/", 1)[-1])


def stack_filter(stack: str) -> dict[str, str | None]:
    return {contract.LABEL_STACK: stack_label(stack)}


def read_config(stack: str) -> dict[str, str] | None:
    """The stack's config, or None when the stack does not exist."""
    try:
        return pulumi_cli.config_get_all(stack)
    except StackNotFound:
        return None


def check_environment(stack: str, config: dict[str, str], allow_prod: bool) -> str:
    environment = config.get(f"{PROJECT}:environment")
    if environment in ("dev", "test") or allow_prod:
        return environment or "unknown"
    if environment == "prod":
        reason = f"stack {stack} is prod-class ({PROJECT}:environment is prod)"
    else:
        reason = f"cannot tell that stack {stack} is not prod ({PROJECT}:environment is unset)"
    raise TeardownRefused(f"{reason}; refusing to destroy it. Pass --allow-prod if you mean it.")


#: Resource types whose deletion the cloud refuses while this output is true.
PROTECTION = {
    "gcp:sql/databaseInstance:DatabaseInstance": "deletionProtection",
    "gcp:compute/instance:Instance": "deletionProtection",
    "aws:rds/instance:Instance": "deletionProtection",
    "aws:ec2/instance:Instance": "disableApiTermination",
}


def protected_resources(state: dict) -> list[str]:
    """URNs of resources in ``pulumi stack export`` output that a destroy cannot delete."""
    found = []
    for resource in (state.get("deployment") or {}).get("resources") or []:
        flag = PROTECTION.get(resource.get("type", ""))
        if flag and (resource.get("outputs") or {}).get(flag):
            found.append(resource["urn"])
    return found


def unprotect_procedure(stack: str, cloud: str, environment: str) -> str:
    """What the operator does before a protected stack can be destroyed."""
    if cloud == "aws" and environment == "prod":
        # prod refuses awsDeletionProtection false in the program; switch it off at the API.
        return (
            "prod keeps RDS deletion protection and EC2 termination protection on, so "
            "`pulumi destroy` fails; switch both off first:\n"
            "  aws rds modify-db-instance --db-instance-identifier <RDS id> "
            "--no-deletion-protection --apply-immediately\n"
            f"  aws ec2 modify-instance-attribute --instance-id $(pulumi stack output vm_id -s {stack}) "
            "--no-disable-api-termination\n"
            f"  pulumi refresh --yes -s {stack}\n"
            "then run this teardown again (the final snapshot is still taken)."
        )
    key = "gcpDeletionProtection" if cloud == "gcp" else "awsDeletionProtection"
    return (
        "deletion protection is on, so `pulumi destroy` would fail; switch it off first:\n"
        f"  pulumi config set {PROJECT}:{key} false -s {stack}\n"
        f"  pulumi up --yes -s {stack}\n"
        "then run this teardown again. The artifact bucket of a dev or prod stack is not "
        "force-destroyed: empty it first if it holds objects (see README, removing a stack)."
    )


def destroy_and_remove(stack: str, timing: Timing, say: Say) -> None:
    """``pulumi destroy`` then ``pulumi stack rm``, each retried while failures are transient."""

    def destroy(attempt: int):
        return pulumi_cli.destroy(stack, refresh=attempt > 1)

    say(f"destroying the resources of stack {stack}")
    try:
        pulumi_cli.with_retries(
            destroy, attempts=timing.attempts, backoff=timing.backoff, say=say, sleep=timing.sleep
        )
    except StackNotFound:
        say(f"stack {stack} disappeared during destroy; nothing left to destroy")
        return
    except PulumiError as error:
        raise TeardownFailed(
            f"pulumi destroy did not finish for {stack}:\n{error}\n"
            f"Fix the cause above and run `fab teardown --stack {stack}` again: "
            "it continues where this run stopped."
        ) from error
    say(f"removing stack {stack}")

    def remove(_attempt: int) -> bool:
        return pulumi_cli.stack_rm(stack)

    try:
        # A removal that timed out may have happened: the retry then finds no stack.
        removed = pulumi_cli.with_retries(
            remove, attempts=timing.attempts, backoff=timing.backoff, say=say, sleep=timing.sleep
        )
    except PulumiError as error:
        if pulumi_cli.has_resources_error(error):
            raise TeardownFailed(
                f"stack {stack} still has resources after destroy; "
                f"run `fab teardown --stack {stack}` again"
            ) from error
        raise TeardownFailed(f"could not remove stack {stack}:\n{error}") from error
    if not removed:
        say(f"stack {stack} was already removed")


def verify(
    finder: Finder, wanted: dict[str, str | None], timing: Timing, say: Say
) -> list[Leftover]:
    """Resources still matching ``wanted`` once listings had ``timing.settle`` to catch up."""
    waited = 0.0
    while True:
        leftovers = finder.find(wanted)
        if not leftovers or waited >= timing.settle:
            return leftovers
        say(f"{len(leftovers)} resource(s) still listed; checking again in {timing.poll:.0f}s")
        timing.sleep(timing.poll)
        waited += timing.poll


def teardown(
    stack: str,
    *,
    allow_prod: bool = False,
    target: Target | None = None,
    finder: Finder | None = None,
    timing: Timing | None = None,
    say: Say = print,
) -> list[Leftover]:
    """Destroy and remove ``stack``, then return whatever of it the cloud still holds.

    ``target`` supplies the cloud (and region/project) when the stack is already
    gone, and overrides its config otherwise; ``finder`` replaces the cloud
    client altogether (tests).
    """
    timing = timing or Timing()
    config = read_config(stack)
    if config is None:
        if finder is None and (target is None or not target.cloud):
            raise TeardownRefused(
                f"stack {stack} does not exist, so its cloud is unknown; pass --cloud "
                "(and --region or --project) to check for leftovers"
            )
        say(f"stack {stack} does not exist (removed earlier); checking the cloud for leftovers")
    else:
        environment = check_environment(stack, config, allow_prod)
        blocked = protected_resources(pulumi_cli.stack_export(stack))
        if blocked:
            cloud = config.get(f"{PROJECT}:cloud", "")
            raise TeardownRefused(
                f"stack {stack} has protected resources ({', '.join(blocked)}); "
                + unprotect_procedure(stack, cloud, environment)
            )
        stack_target = Target.from_config(config)
        if target is not None:
            stack_target = Target(
                target.cloud or stack_target.cloud,
                target.region or stack_target.region,
                target.project or stack_target.project,
            )
        target = stack_target
        if finder is None:
            finder = target.finder()  # fail on a missing region/project before destroying
        destroy_and_remove(stack, timing, say)
    finder = finder or target.finder()
    label = f"{contract.LABEL_STACK}={stack_label(stack)}"
    # GCP resources that take no labels carry the same text in their description.
    marked = " or so marked in their description" if finder.cloud == "gcp" else ""
    say(f"checking {finder.cloud} for resources labelled {label}{marked}")
    return verify(finder, stack_filter(stack), timing, say)
