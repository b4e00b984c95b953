"""A rolling bootstrap over the servers of a group: one host at a time, each drained
from the load balancer only if something on it is about to restart or reload.

For each host, in the order of ``hosts``: its own play (its lock, its SSH connection)
runs the bootstrap; the first command that would interrupt serving there
(provisioning.transport.DISRUPTIVE) first drains the host (provisioning.steps.drain).
After the play and its health gate, a drained host is un-drained and the roll waits
until the balancer can see it healthy again before it moves on. A host with nothing
to change is never drained, so a second rolling bootstrap restarts and drains nothing.
A failure stops the roll: the failed host stays drained, the hosts after it are not
touched, and running the same command again resumes (done hosts are passed over).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from provisioning.layout import PATHS
from provisioning.play import Play
from provisioning.settings import Deployment
from provisioning.settings.group import group_host
from provisioning.steps import drain


@dataclass(frozen=True)
class HostRoll:
    host: str
    changes: int
    drained: bool
    seconds: float


class RollStopped(RuntimeError):
    """The roll stopped at one host; the message says where, why and how to resume."""


def roll(
    group: Deployment,
    open_play: Callable[[Deployment], AbstractContextManager[Play]],
    converge: Callable[[Play, Deployment], None],
    out: Callable[[str], None] = print,
    task: str = "bootstrap",
) -> list[HostRoll]:
    """``converge(play, deployment)`` on each host of ``group``, one at a time (see above)."""
    done: list[HostRoll] = []
    total = len(group.hosts)
    for index, name in enumerate(group.hosts, 1):
        deployment = group_host(group, name)
        out(f"[{name}] host {index} of {total}: {task}")
        started = time.monotonic()
        drained = False
        try:
            with open_play(deployment) as play:

                def drain_first(play: Play = play, seconds: int = deployment.drain_seconds):
                    nonlocal drained
                    drained = True
                    interrupted = play.host.step
                    play.step("drain", drain.drain, seconds)
                    play.host.step = interrupted

                play.host.before_disruption = drain_first
                try:
                    converge(play, deployment)
                finally:
                    play.host.before_disruption = None
                # Also a host a stopped roll left drained, and that has nothing to change now.
                play.step("un-drain", drain.undrain)
                if play.reports[-1].changed:
                    drained = True
                    play.step("rejoin", drain.rejoin, deployment.healthy_seconds)
                changes = play.changes - sum(
                    1 for r in play.reports if r.changed and r.name in ("drain", "un-drain")
                )
        except Exception as error:
            raise RollStopped(_stopped(group, task, index, drained, done, error)) from error
        result = HostRoll(name, changes, drained, time.monotonic() - started)
        done.append(result)
        out(
            f"[{name}] {task} done in {result.seconds:.1f}s: {changes} changed, "
            + ("drained and back in the balancer" if drained else "not drained")
        )
    return done


def _stopped(
    group: Deployment, task: str, index: int, drained: bool, done: list[HostRoll], error: Exception
) -> str:
    name = group.hosts[index - 1]
    rest = group.hosts[index:]
    state = (
        f"{name} is left drained (its /health answers 503 to the load balancer, which keeps "
        f"it out; the flag is {PATHS['drain_flag']})"
        if drained
        else f"{name} was not drained (nothing on it had restarted yet)"
    )
    return (
        f"rolling {task} stopped at {name} (host {index} of {len(group.hosts)}): {error}\n"
        f"{state}; done: {', '.join(r.host for r in done) or 'none'}; "
        f"not touched, still serving: {', '.join(rest) or 'none'}.\n"
        f"To resume, fix the cause and run the same command again: hosts with nothing to "
        f"change are passed over without draining, and {name} is un-drained once its "
        f"{task} passes."
    )


def summary(results: list[HostRoll], seconds: float, task: str = "bootstrap") -> str:
    changes = sum(r.changes for r in results)
    drained = [r.host for r in results if r.drained]
    return (
        f"rolling {task} of {len(results)} hosts finished in {seconds:.1f}s: {changes} changed, "
        f"drained: {', '.join(drained) or 'none'}; "
        + "; ".join(f"{r.host} {r.seconds:.1f}s" for r in results)
    )
