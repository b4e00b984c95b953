"""What every component of both programs shares (pulumi/examples' ComponentResource shape)."""

from __future__ import annotations

from typing import Any

import pulumi


class Component(pulumi.ComponentResource):
    """A component: its ``"<pkg>:<module>:<Type>"`` token (``TYPE``), its resources declared
    by ``declare`` with ``self.child`` (``parent=self``, so their URNs nest under it and
    their names start with the component's), and the outputs ``declare`` returns
    registered.

    ``FORMER``: the token the component had before it was renamed. The alias lets a stack
    deployed with that token update the component and its children in place: the engine
    finds each child under the component's old URN (pulumi/pulumi ``step_generator.go``,
    ``inheritedChildAlias``), so nothing is replaced.
    """

    TYPE: str
    FORMER: str | None = None

    def __init__(self, name: str, args: Any, opts: pulumi.ResourceOptions | None = None):
        if self.FORMER is not None:
            renamed = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=self.FORMER)])
            opts = pulumi.ResourceOptions.merge(opts, renamed)
        super().__init__(self.TYPE, name, None, opts)
        self.child = pulumi.ResourceOptions(parent=self)
        self.register_outputs(self.declare(name, args))

    def declare(self, name: str, args: Any) -> dict[str, pulumi.Input]:
        """Declare the component's resources; returns its outputs."""
        raise NotImplementedError
