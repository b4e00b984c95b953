"""The stack marker for resources that have a description but cannot carry labels."""

from __future__ import annotations

from stacks import contract, naming


def marker(stack: str) -> str:
    """The text that names ``stack`` in a description (stacks/contract.py)."""
    return contract.DESCRIPTION_MARKER.format(stack=naming.stack_label(stack))


def described(text: str, stack: str) -> str:
    """``text`` followed by the stack marker, so teardown can find the resource."""
    return f"{text} {marker(stack)}"
