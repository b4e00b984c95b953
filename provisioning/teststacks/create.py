"""Assemble and create a test stack: owner- and time-named, expiring, deployed.

Its settings come, in order of increasing precedence, from the example stack
file for the cloud (``stacks/Pulumi.<cloud>-test.yaml``, or ``--from-file``),
then from ``KEY=VALUE`` pairs given on the command line, then from the three
values the kit always sets itself: ``cloud``, ``environment: test`` and
``expiresAt``. Encrypted (``secure:``) values in a stack file belong to that
stack's secrets provider and cannot be copied; they are listed so the caller
can set them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from provisioning import pulumi_cli
from provisioning.teststacks import naming
from stacks import keys
from stacks.keys import PROJECT

STACKS_DIR = pulumi_cli.REPO_ROOT / "stacks"
#: Keys the kit sets for every test stack; the caller cannot override them.
OWN_KEYS = (f"{PROJECT}:cloud", f"{PROJECT}:environment", f"{PROJECT}:expiresAt")
REQUIRED_KEYS = (f"{PROJECT}:httpsAllowedCidrs",)


class PlanError(ValueError):
    """The test stack cannot be planned from what was given."""


@dataclass
class Plan:
    name: str
    config: dict[str, Any]
    source: Path | None
    skipped_secrets: list[str] = field(default_factory=list)


def example_file(cloud: str) -> Path:
    return STACKS_DIR / f"Pulumi.{cloud}-test.yaml"


def qualified(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def read_stack_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Plain config values of a stack file, and the secure keys skipped.

    Scalars become the text the CLI stores for them; lists and maps stay structured,
    so ``pulumi_cli.config_set`` stores them as objects, as the stack file does.
    """
    document = yaml.safe_load(path.read_text()) or {}
    values, secrets = {}, []
    for key, value in (document.get("config") or {}).items():
        key = qualified(str(key))
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(key)
        elif isinstance(value, list | dict):
            values[key] = value
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        elif value is not None:
            values[key] = str(value)
    return values, secrets


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a key Pulumi.yaml types as a list or map takes JSON."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PlanError(f"--config {pair!r} is not KEY=VALUE (e.g. gcp:project=my-project)")
        key = qualified(key.strip())
        namespace, _, name = key.partition(":")
        kind = keys.TYPES.get(name) if namespace == PROJECT else None
        if kind in ("array", "object"):
            wanted = list if kind == "array" else dict
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if not isinstance(parsed, wanted):
                example = '["203.0.113.0/24"]' if kind == "array" else '{"team": "ml"}'
                raise PlanError(
                    f"--config {pair!r}: {key} is an {kind}; "
                    f"give it as JSON, e.g. {name}='{example}'"
                )
            value = parsed
        values[key] = value
    return values


def plan(
    cloud: str,
    ttl: str,
    *,
    now: datetime,
    who: str | None = None,
    name: str | None = None,
    from_file: str | None = None,
    pairs: list[str] | None = None,
) -> Plan:
    """Work out a test stack's name and config without touching anything."""
    if cloud not in ("gcp", "aws"):
        raise PlanError(f"--cloud {cloud!r}: allowed gcp or aws")
    try:
        lifetime: timedelta = naming.parse_ttl(ttl)
    except ValueError as error:
        raise PlanError(str(error)) from error
    source = Path(from_file) if from_file else example_file(cloud)
    if from_file and not source.is_file():
        raise PlanError(f"--from-file {from_file}: no such file")
    config, secrets = read_stack_file(source) if source.is_file() else ({}, [])
    given = parse_pairs(pairs or [])
    for key in OWN_KEYS:
        if key in given:
            raise PlanError(f"--config {key} is set by test-stack itself (use --ttl for expiry)")
    config.update(given)
    config[f"{PROJECT}:cloud"] = cloud
    config[f"{PROJECT}:environment"] = "test"
    config[f"{PROJECT}:expiresAt"] = naming.expires_at(now, lifetime)
    missing = [key for key in REQUIRED_KEYS if not config.get(key)]
    if missing:
        where = source if source.is_file() else f"{source} (absent)"
        raise PlanError(
            f"required setting(s) {', '.join(missing)} not in {where} nor --config; e.g. "
            f"--config 'httpsAllowedCidrs=[\"203.0.113.0/24\"]'"
        )
    stack = name or naming.stack_name(who or naming.owner(), now)
    return Plan(stack, config, source if source.is_file() else None, secrets)


def create(plan: Plan, *, deploy: bool = True, say=print) -> None:
    """``stack init``, ``config set`` for every value, then ``pulumi up --yes``."""
    say(f"creating stack {plan.name}")
    pulumi_cli.stack_init(plan.name)
    pulumi_cli.stack_select(plan.name)
    for key, value in plan.config.items():
        pulumi_cli.config_set(plan.name, key, value)
    if plan.skipped_secrets:
        say(
            "not copied (encrypted for another stack; set with `pulumi config set --secret`): "
            + ", ".join(plan.skipped_secrets)
        )
    if deploy:
        say(f"deploying {plan.name} (expires {plan.config[f'{PROJECT}:expiresAt']} UTC)")
        pulumi_cli.up(plan.name)
