"""A strict double of a Fabric connection: it expects exactly the scripted commands, in order.

Commands are written as a shell prompt would show them: ``# cmd`` runs as root
(through ``sudo -n sh -c``), ``$ cmd`` as the login user, ``mlflow$ cmd`` as the
``mlflow`` user. An unscripted or out-of-order command fails the test, and so
does a scripted one that never ran (:meth:`ScriptedConnection.assert_done`).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field


@dataclass
class Result:
    stdout: str = ""
    stderr: str = ""
    exited: int = 0


def prompt_form(command: str) -> str:
    """``sudo -n sh -c 'x'`` -> ``# x``; ``sudo -n -u u sh -c 'x'`` -> ``u$ x``; else ``$ x``."""
    words = shlex.split(command) if command.startswith("sudo -n ") else []
    if words[:2] == ["sudo", "-n"] and words[-3:-1] == ["sh", "-c"]:
        if words[2:4] == ["sh", "-c"]:
            return f"# {words[-1]}"
        if words[2] == "-u":
            return f"{words[3]}$ {words[-1]}"
    return f"$ {command}"


class UnexpectedCommand(AssertionError):
    pass


@dataclass
class ScriptedConnection:
    """Answers each command from the next transcript entry; records uploads by path."""

    transcript: list[dict]
    host: str = "203.0.113.10"
    user: str = "admin"
    ran: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    stdins: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pending = list(self.transcript)

    def _next(self, shown: str, kind: str) -> dict:
        if not self._pending:
            raise UnexpectedCommand(f"unscripted {kind}: {shown}\nafter: {self.ran[-3:]}")
        entry = self._pending[0]
        if entry.get(kind) != shown:
            raise UnexpectedCommand(
                f"expected {kind} {entry.get(kind, entry)!r}\n     got {kind} {shown!r}"
                f"\nafter: {self.ran[-3:]}"
            )
        self._pending.pop(0)
        self.ran.append(shown)
        return entry

    def run(self, command, in_stream=False, **_kwargs):
        entry = self._next(prompt_form(command), "run")
        stdin = in_stream.getvalue() if in_stream else None
        if "stdin" in entry:
            assert stdin == entry["stdin"], f"stdin of {entry['run']!r}"
        self.stdins.append(stdin)
        return Result(entry.get("stdout", ""), entry.get("stderr", ""), entry.get("exit", 0))

    def put(self, stream, remote):
        data = stream.read()
        entry = self._next(remote, "put")
        if "sha256" in entry:
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"content of {remote}"
        for text in entry.get("contains", []):
            assert text.encode() in data, f"{remote} lacks {text!r}"
        self.uploads[remote] = data

    def assert_done(self) -> None:
        assert not self._pending, f"scripted but never ran: {self._pending[0]}"
