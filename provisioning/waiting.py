"""Waiting on a host: read until something is so, say so while it takes, stop at a bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from provisioning.transport import Host, RemoteError

T = TypeVar("T")
NOTE_EVERY_S = 15


def until(
    host: Host,
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    poll: float,
    late: Callable[[T], RemoteError] | None = None,
    note: Callable[[T, float], str] | None = None,
) -> T:
    """Call ``read`` every ``poll`` seconds until ``done`` says so; return the last value.

    ``note(value, seconds)`` is shown (through the play) at once and every 15 s while
    waiting; after ``timeout`` the error ``late(value)`` is raised, or without ``late``
    the last value is returned (a bounded wait that may end unfinished).
    """
    started = time.monotonic()
    last_note = started - NOTE_EVERY_S
    while True:
        value = read()
        if done(value):
            return value
        now = time.monotonic()
        if now - started > timeout:
            if late is None:
                return value
            raise late(value)
        if note is not None and now - last_note >= NOTE_EVERY_S:
            host.note(note(value, now - started))
            last_note = now
        time.sleep(poll)
