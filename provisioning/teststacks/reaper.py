"""Find test stacks past their TTL, and labelled resources whose stack is gone.

A stack is reaped only when its own config says ``environment: test`` and its
``expiresAt`` is in the past; anything else (dev, prod, no expiry, unreadable
config, an update in progress) is kept and the reason printed. A resource is an
orphan only when it is labelled ``mlflow-kit-env=test``, its expiry label is in
the past, and no stack of this project carries its stack label. Orphans are
looked for in the clouds the caller names (or whose region/project variables
are set), since a gone stack no longer says where it lived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from provisioning import pulumi_cli
from provisioning.teststacks import naming
from provisioning.teststacks.leftovers import Leftover
from provisioning.teststacks.teardown import Finder, read_config
from stacks import contract
from stacks.keys import PROJECT
from stacks.naming import stack_label


@dataclass
class Expired:
    stack: str
    expires: datetime
    cloud: str


@dataclass
class Plan:
    expired: list[Expired] = field(default_factory=list)
    #: (stack, why it is left alone)
    kept: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[tuple[Finder, Leftover]] = field(default_factory=list)


def judge(stack: str, config: dict[str, str] | None, now: datetime) -> Expired | str:
    """Expired, or the reason the stack must be left alone."""
    if config is None:
        return "stack vanished while listing"
    environment = config.get(f"{PROJECT}:environment")
    if environment != "test":
        return f"not a test stack (environment: {environment or 'unset'})"
    expires = naming.parse_expires(config.get(f"{PROJECT}:expiresAt"))
    if expires is None:
        return "test stack without a valid expiresAt"
    if expires > now:
        return f"not expired (expires {expires:%Y-%m-%d %H:%M} UTC)"
    return Expired(stack, expires, config.get(f"{PROJECT}:cloud", ""))


def plan(now: datetime, finders: list[Finder]) -> Plan:
    result = Plan()
    stacks = pulumi_cli.stack_list()
    for entry in stacks:
        name = entry["name"]
        verdict = judge(name, read_config(name), now)
        if isinstance(verdict, str):
            result.kept.append((name, verdict))
        elif entry.get("updateInProgress"):
            result.kept.append((name, "expired, but an update is in progress; next run"))
        else:
            result.expired.append(verdict)
    # Stack names may carry a backend prefix (org/project/stack); labels hold the last part.
    alive = {stack_label(entry["name"].rsplit("/", 1)[-1]) for entry in stacks}
    wanted = {contract.LABEL_ENVIRONMENT: "test", contract.LABEL_EXPIRES: None}
    for finder in finders:
        for item in finder.find(wanted):
            expires = naming.parse_expires(item.expires)
            if item.stack in alive or expires is None or expires > now:
                continue
            result.orphans.append((finder, item))
    return result
