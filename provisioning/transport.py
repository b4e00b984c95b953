"""Commands on one host over SSH: run, read a fact, upload. Nothing else.

A failed command raises :class:`RemoteError` naming the host, the step that
ran it, the command, its exit code and the tail of its stderr. Secrets travel
only as file contents over SFTP or on stdin, never in a command line.
Reporting lives in :mod:`provisioning.play`, file convergence in
:mod:`provisioning.files`.
"""

from __future__ import annotations

import io
import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from invoke.exceptions import CommandTimedOut

if TYPE_CHECKING:
    from fabric import Connection

    from provisioning.facts import Fact

T = TypeVar("T")
STDERR_TAIL_LINES = 20
#: Commands that interrupt serving on the host: a server instance or nginx started,
#: stopped, restarted or reloaded. A rolling bootstrap drains the host before the first.
DISRUPTIVE = re.compile(
    r"\bsystemctl\s+(?:restart|reload|reload-or-restart|try-restart|stop|start|disable --now)"
    r"\s[^;&|]*\b(?:mlflow-server@|nginx\b)"
)


class WholeReads(io.StringIO):
    """A command's input, handed over in one read. invoke copies ``in_stream`` to the
    command one read at a time, asking a stream that is not a terminal for 1 character
    (``invoke.terminals.bytes_to_read``) and sleeping ``input_sleep`` (10 ms) after each
    (``Runner.handle_stdin``): 100 characters a second, so 3 s for the 300 characters of
    a database URI. This stream answers any read with all that is left."""

    def read(self, size: int | None = -1) -> str:
        return super().read()


class RemoteError(RuntimeError):
    """A remote command failed."""

    def __init__(self, host: str, step: str, command: str, exit_code: int, stderr: str):
        self.host, self.step, self.command = host, step, command
        self.exit_code, self.stderr = exit_code, stderr
        tail = "\n".join(stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        super().__init__(
            f"[{host}] step {step!r} failed: `{command}` exited {exit_code}\n{tail}".rstrip()
        )


class PreflightError(RuntimeError):
    """The host or its endpoints are not fit for the play; nothing was changed."""


class Host:
    """One SSH connection, and the name of the step currently running on it."""

    def __init__(self, conn: Connection, step: str = "connect"):
        self.conn = conn
        #: Set by the play before each step, so errors name the step.
        self.step = step
        #: Progress of long operations ("still waiting for ..."); the play prints it.
        self.note: Callable[[str], None] = lambda _message: None
        #: Called once, before the first DISRUPTIVE command (a rolling bootstrap's drain).
        self.before_disruption: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        return self.conn.host

    def disrupting(self) -> None:
        """Serving is about to be interrupted: the ``before_disruption`` hook runs now, once
        (a step that decides how to restart by whether the host was drained calls this
        before it looks)."""
        if self.before_disruption is not None:
            hook, self.before_disruption = self.before_disruption, None
            hook()

    @property
    def user(self) -> str:
        return self.conn.user

    def run(
        self,
        command: str,
        *,
        sudo: bool = True,
        check: bool = True,
        user: str | None = None,
        stdin: str | None = None,
        timeout: float | None = None,
    ):
        """Run ``command`` through ``sh -c`` (as root by default); raise RemoteError on failure."""
        if DISRUPTIVE.search(command):
            self.disrupting()
        wrapped = command
        if user:
            wrapped = f"sudo -n -u {shlex.quote(user)} sh -c {shlex.quote(command)}"
        elif sudo:
            wrapped = f"sudo -n sh -c {shlex.quote(command)}"
        try:
            result = self.conn.run(
                wrapped,
                hide=True,
                warn=True,
                pty=False,
                timeout=timeout,
                in_stream=WholeReads(stdin) if stdin is not None else False,
            )
        except CommandTimedOut as timed_out:
            raise self.error(command, -1, f"no result within {timed_out.timeout:.0f}s") from None
        if check and result.exited != 0:
            raise self.error(command, result.exited, result.stderr or result.stdout)
        return result

    def read(self, fact: Fact[T], stdin: str | None = None) -> T:
        """Run a fact's command (which always exits 0 when it can read) and parse its output."""
        return fact.parse(self.run(fact.command, sudo=fact.sudo, stdin=stdin).stdout)

    def put(self, data: bytes, remote_path: str) -> None:
        """Upload ``data`` over SFTP as the login user."""
        self.conn.put(io.BytesIO(data), remote_path)

    def error(self, command: str, exit_code: int, stderr: str) -> RemoteError:
        return RemoteError(self.name, self.step, command, exit_code, stderr)
