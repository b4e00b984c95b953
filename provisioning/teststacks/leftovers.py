"""What the cloud still holds of a stack, and how to say so."""

from __future__ import annotations

from dataclasses import dataclass, field

from stacks import contract


@dataclass
class Leftover:
    """One resource that carries the kit's labels/tags, found with the cloud's own API."""

    cloud: str
    #: Short type a person recognises, e.g. ``ec2 instance`` or ``compute instance``.
    kind: str
    #: The name or id the cloud console shows.
    name: str
    #: ARN (AWS) or full resource name (GCP): unique, and what removal uses.
    ident: str
    remove_command: str
    labels: dict[str, str] = field(default_factory=dict)
    state: str = ""
    #: Where it lives: region, zone or ``global``.
    location: str = ""

    @property
    def stack(self) -> str | None:
        return self.labels.get(contract.LABEL_STACK)

    @property
    def environment(self) -> str | None:
        return self.labels.get(contract.LABEL_ENVIRONMENT)

    @property
    def expires(self) -> str | None:
        return self.labels.get(contract.LABEL_EXPIRES)

    def describe(self) -> str:
        state = f" [{self.state}]" if self.state else ""
        where = f" in {self.location}" if self.location else ""
        return f"{self.cloud} {self.kind} {self.name}{where}{state}"


class CannotRemove(RuntimeError):
    """The kit has no safe way to remove this kind of resource by itself."""


def report(leftovers: list[Leftover]) -> str:
    """Every leftover by name, each followed by the command that removes it."""
    lines = []
    for item in leftovers:
        lines.append(f"  LEFTOVER {item.describe()}  ({item.ident})")
        lines.append(f"    remove with: {item.remove_command}")
    return "\n".join(lines)
