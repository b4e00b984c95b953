"""Tags of the resources inside an AWS component."""

from __future__ import annotations


def named(tags: dict[str, str], component: str, suffix: str) -> dict[str, str]:
    """``tags`` with the Name tag of one of a component's resources: ``<Name>-<suffix>``,
    where ``<Name>`` is the component's own Name tag (or its name without one)."""
    return {**tags, "Name": f"{tags.get('Name', component)}-{suffix}"}
