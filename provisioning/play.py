"""Plays run steps in order against one host and report each one.

A step is a function ``step(host, *args) -> Outcome``: it reads the host's
state, changes only what differs and says which. Every step prints one line,
``[host] step ... ok|changed (1.2s) - detail``; a step that changed nothing
says why (``detail`` is required then), and ``value`` carries what later steps
need, so a play reads as straight-line code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from provisioning.transport import Host

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    changed: bool
    detail: str = ""
    value: T | None = None

    def __post_init__(self) -> None:
        if not self.changed and not self.detail:
            raise ValueError("a step that changed nothing must say why (detail)")


def changed(detail: str = "", value: T | None = None) -> Outcome[T]:
    return Outcome(True, detail, value)


def unchanged(detail: str, value: T | None = None) -> Outcome[T]:
    return Outcome(False, detail, value)


@dataclass(frozen=True)
class StepReport:
    name: str
    changed: bool
    seconds: float
    detail: str


class Play:
    """Runs the steps of one play on one host and keeps their reports."""

    def __init__(self, host: Host, out: Callable[[str], None] = print):
        self.host = host
        self.out = out
        self.reports: list[StepReport] = []
        host.note = lambda message: out(f"[{host.name}] {host.step:<28} ... {message}")

    def step(self, name: str, function: Callable[..., Outcome[T]], *args: Any) -> T:
        """Run ``function(host, *args)`` as the step ``name``; return its outcome's value."""
        self.host.step = name
        started = time.monotonic()
        outcome = function(self.host, *args)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"step {name!r} returned {outcome!r}, not an Outcome")
        report = StepReport(name, outcome.changed, time.monotonic() - started, outcome.detail)
        self.reports.append(report)
        status = "changed" if report.changed else "ok"
        suffix = f" - {report.detail}" if report.detail else ""
        self.out(f"[{self.host.name}] {name:<28} {status:<8} ({report.seconds:.1f}s){suffix}")
        return outcome.value

    @property
    def changes(self) -> int:
        return sum(1 for report in self.reports if report.changed)
