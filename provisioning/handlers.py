"""Restart, reload and daemon-reload decisions, derived from what changed.

Only the table in :mod:`provisioning.layout` says which change notifies which
service; nothing else spells service names next to file names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provisioning.layout import FILES, OTHER_STATE


@dataclass(frozen=True)
class Actions:
    daemon_reload: bool = False
    restart: frozenset[str] = frozenset()
    reload: frozenset[str] = frozenset()

    def restarts(self, service: str) -> bool:
        return service in self.restart

    def reloads(self, service: str) -> bool:
        """Whether ``service`` must reload (a restart would do it too)."""
        return service in self.reload or service in self.restart


def notified(item: str):
    """The handler ``item`` (a template name or other managed state) notifies, or None."""
    if item in FILES:
        return FILES[item].notifies
    if item in OTHER_STATE:
        return OTHER_STATE[item]
    raise KeyError(f"{item!r} is neither a managed file nor managed state")


def inputs_of(service: str) -> tuple[str, ...]:
    """The templates whose change restarts ``service``: what it reads at start."""
    return tuple(
        name
        for name, file in FILES.items()
        if file.notifies is not None
        and file.notifies.action == "restart"
        and file.notifies.service == service
    )


def actions_for(changed: Iterable[str]) -> Actions:
    """What to do about the ``changed`` managed items (template names or state names)."""
    restart, reload, daemon_reload = set(), set(), False
    for item in changed:
        if item in FILES and FILES[item].is_unit:
            daemon_reload = True
        handler = notified(item)
        if handler is not None:
            (restart if handler.action == "restart" else reload).add(handler.service)
    return Actions(daemon_reload, frozenset(restart), frozenset(reload))
