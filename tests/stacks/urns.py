"""Which deployed resource each resource of today's program takes over, as the engine decides.

A renamed component type, a moved resource or a new parent changes URNs; Pulumi then
creates the new resource and deletes the old one unless an alias leads from the new
resource to the old URN. ``resolve`` replays the engine's matching on the registrations
a mocked run recorded (stack_harness.RecordingMonitor), from pulumi/pulumi
``pkg/resource/deploy/step_generator.go``:

- ``generateSteps``: a resource takes the old resource with its own URN, else the one
  with the first of its aliases found in the old state; that alias is remembered for
  the resource (``sg.aliases``), and claiming an old URN twice, or one that is another
  new resource's URN, is an error;
- ``collapseAliasToUrn``: an alias's name and type default to the resource's own; its
  parent defaults to the resource's current parent, a given parent is replaced by the
  old URN that parent itself was matched by, and no parent (or the root stack) means a
  top-level URN;
- ``generateAliases``: when the parent was matched by an alias, the child also gets
  the URN it had under the parent's old URN (``inheritedChildAlias``: a name starting
  with the parent's name gets the parent's old name instead), for itself and for each
  of its own aliases.

``python tests/stacks/urns.py`` records the URNs of the program as it stands (run it
only on a commit whose stacks are deployed) into ``recorded/urns-<cloud>.json``, with
each resource's inputs; ``--inputs`` rewrites only the inputs (after a deliberate change
of what a resource is given), keeping the URNs of the deployed stacks.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "recorded"

#: Configurations that between them declare every resource the programs can declare.
VARIANTS = {
    "gcp": [
        {"id": "dev", "stack": "gcp-dev", "environment": "dev", "overrides": {}},
        {
            "id": "prod-letsencrypt-ssh-cidrs",
            "stack": "gcp-prod",
            "environment": "prod",
            "overrides": {
                "tlsMode": "letsencrypt",
                "domain": "mlflow.example.com",
                "acmeEmail": "ops@example.com",
                "sshAllowedCidrs": ["198.51.100.0/28"],
            },
        },
        {"id": "test", "stack": "ci-1234", "environment": "test", "overrides": {}},
    ],
    "aws": [
        {"id": "dev", "stack": "aws-dev", "environment": "dev", "overrides": {}},
        {
            "id": "prod-letsencrypt-two-https-cidrs",
            "stack": "aws-prod",
            "environment": "prod",
            "overrides": {
                "tlsMode": "letsencrypt",
                "domain": "mlflow.example.com",
                "acmeEmail": "ops@example.com",
                "httpsAllowedCidrs": ["203.0.113.0/24", "198.51.100.0/24"],
            },
        },
        {
            "id": "test-session-manager",
            "stack": "ci-1234",
            "environment": "test",
            "overrides": {"sshAllowedCidrs": None},
        },
    ],
}


def _type(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


def _qualified_type(urn: str) -> str:
    return urn.split("::")[2]


def _name(urn: str) -> str:
    return urn.split("::", 3)[3]


@dataclass
class Resolution:
    """What the engine would do with a stack deployed as ``olds`` under the new program."""

    #: old URN -> the new URN that takes it over.
    taken: dict[str, str] = field(default_factory=dict)
    #: new URNs that matched an old URN only through an alias.
    by_alias: dict[str, str] = field(default_factory=dict)
    #: new resources that match nothing old: the engine would create them.
    created: list[str] = field(default_factory=list)
    #: errors the engine would raise (an old URN claimed twice, ...).
    errors: list[str] = field(default_factory=list)

    def deleted(self, olds) -> list[str]:
        """Old URNs no new resource takes over: the engine would delete them."""
        return sorted(set(olds) - set(self.taken))


def resolve(olds, registrations, stack: str, project: str) -> Resolution:
    """Replay the engine's URN and alias matching of ``registrations`` against ``olds``."""
    olds = set(olds)
    news = {r.urn for r in registrations}
    matched: dict[str, str] = {}  # the engine's sg.aliases
    out = Resolution()

    def create_urn(name: str, typ: str, parent: str) -> str:
        qualified = f"{_qualified_type(parent)}${typ}" if parent else typ
        return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"

    def collapse(resource, alias) -> str:
        if alias.urn:
            return alias.urn
        parent = matched.get(alias.parent, alias.parent) if alias.parent else resource.parent
        if alias.no_parent or (parent and _qualified_type(parent) == "pulumi:pulumi:Stack"):
            parent = ""
        return create_urn(alias.name or resource.name, alias.typ or resource.typ, parent)

    def inherited(child_type: str, child_name: str, parent_name: str, parent_alias: str) -> str:
        if child_name.startswith(parent_name):
            child_name = _name(parent_alias) + child_name[len(parent_name) :]
        return create_urn(child_name, child_type, parent_alias)

    for resource in registrations:
        aliases: list[str] = []
        for alias in resource.aliases:
            aliases.append(collapse(resource, alias))
        if resource.parent in matched:
            parent_alias, parent_name = matched[resource.parent], _name(resource.parent)
            aliases.append(inherited(resource.typ, resource.name, parent_name, parent_alias))
            for alias in resource.aliases:
                own = collapse(resource, alias)
                aliases.append(inherited(_type(own), _name(own), parent_name, parent_alias))
        for candidate in [resource.urn, *dict.fromkeys(aliases)]:
            if candidate not in olds:
                continue
            if candidate != resource.urn:
                if candidate in news:
                    out.errors.append(f"{resource.urn} claims {candidate}, a new resource's URN")
                matched[resource.urn] = candidate
                out.by_alias[resource.urn] = candidate
            if candidate in out.taken:
                out.errors.append(
                    f"{candidate} claimed by {out.taken[candidate]} and {resource.urn}"
                )
            out.taken[candidate] = resource.urn
            break
        else:
            out.created.append(resource.urn)
    return out


def run_variant(cloud: str, variant: dict):
    """Run the program for one recorded variant; returns the stack_harness.StackRun."""
    import stack_harness

    values = stack_harness.config(cloud, variant["environment"], **variant["overrides"])
    return stack_harness.run(values, stack=variant["stack"])


def inputs_by_urn(run) -> dict[str, dict]:
    """Each registered resource's inputs (wire names), keyed by its engine URN, as JSON data."""
    by_name = {(r.typ, r.name): r.inputs for r in run.mocks.registered}
    return {
        r.urn: json.loads(json.dumps(by_name[(r.typ, r.name)], sort_keys=True))
        for r in run.monitor.registrations
    }


def record(inputs_only: bool = False) -> None:
    for cloud, variants in VARIANTS.items():
        path = RECORDED / f"urns-{cloud}.json"
        kept = {v["id"]: v["urns"] for v in json.loads(path.read_text())} if inputs_only else {}
        document = []
        for variant in variants:
            run = run_variant(cloud, variant)
            urns = sorted(r.urn for r in run.monitor.registrations)
            inputs = inputs_by_urn(run)
            if inputs_only:
                renamed = {
                    new: old
                    for old, new in resolve(
                        kept[variant["id"]],
                        run.monitor.registrations,
                        variant["stack"],
                        "mlflow-server",
                    ).taken.items()
                }
                urns, inputs = kept[variant["id"]], {renamed[u]: i for u, i in inputs.items()}
            document.append({**variant, "urns": urns, "inputs": inputs})
        path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        print(f"{path}: {sum(len(v['urns']) for v in document)} URNs")


if __name__ == "__main__":
    sys.path[:0] = [str(HERE), str(HERE.parent.parent)]
    record(inputs_only="--inputs" in sys.argv[1:])
