"""Running steps on a host over SSH: read state, change only what differs, report.

Every step prints one line: ``[host] step ... ok|changed (1.2s)``. A failed
command raises ``RemoteError`` naming the host, the step, the command, its
exit code and the tail of its stderr. Secrets travel only as file contents
over SFTP or on stdin, never in a command line.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fabric import Connection

STDERR_TAIL_LINES = 20


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
    """The host or its endpoints are not fit for a bootstrap; nothing was changed."""


@dataclass
class StepReport:
    name: str
    changed: bool
    seconds: float
    detail: str = ""


@dataclass
class FileState:
    exists: bool
    sha256: str = ""
    mode: str = ""
    owner: str = ""
    group: str = ""


def parse_file_state(output: str) -> FileState:
    """Parse ``stat -c '%a %U %G'`` then ``sha256sum`` output; ``missing`` when absent."""
    text = output.strip()
    if not text or text == "missing":
        return FileState(exists=False)
    lines = text.splitlines()
    mode, owner, group = lines[0].split()
    digest = lines[1].split()[0] if len(lines) > 1 else ""
    return FileState(True, digest, mode.zfill(4), owner, group)


@dataclass
class Runner:
    """Runs the steps of one task against one host and keeps their reports."""

    conn: Connection
    out: Callable[[str], None] = print
    reports: list[StepReport] = field(default_factory=list)
    current: str = "connect"
    #: Cores, memory and disk, read by preflight (provisioning.facts.Resources).
    resources: object = None

    @property
    def host(self) -> str:
        return self.conn.host

    def step(self, name: str, function: Callable[[], bool | tuple[bool, str]]) -> StepReport:
        """Run one step; ``function`` returns whether it changed anything (and a detail)."""
        self.current = name
        started = time.monotonic()
        result = function()
        changed, detail = result if isinstance(result, tuple) else (result, "")
        report = StepReport(name, bool(changed), time.monotonic() - started, detail)
        self.reports.append(report)
        status = "changed" if report.changed else "ok"
        suffix = f" - {detail}" if detail else ""
        self.out(f"[{self.host}] {name:<28} {status:<8} ({report.seconds:.1f}s){suffix}")
        return report

    @property
    def changes(self) -> int:
        return sum(1 for report in self.reports if report.changed)

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
        wrapped = command
        if user:
            wrapped = f"sudo -n -u {shlex.quote(user)} sh -c {shlex.quote(command)}"
        elif sudo:
            wrapped = f"sudo -n sh -c {shlex.quote(command)}"
        result = self.conn.run(
            wrapped,
            hide=True,
            warn=True,
            pty=False,
            timeout=timeout,
            in_stream=io.StringIO(stdin) if stdin is not None else False,
        )
        if check and result.exited != 0:
            raise RemoteError(
                self.host, self.current, command, result.exited, result.stderr or result.stdout
            )
        return result

    def file_state(self, path: str) -> FileState:
        q = shlex.quote(path)
        result = self.run(
            f"if [ -e {q} ]; then stat -c '%a %U %G' {q} && sha256sum {q}; else echo missing; fi"
        )
        return parse_file_state(result.stdout)

    def ensure_file(
        self,
        path: str,
        content: str | bytes,
        *,
        mode: str,
        owner: str = "root",
        group: str = "root",
    ) -> bool:
        """Make ``path`` hold exactly ``content`` with ``mode``/``owner``; True if it changed."""
        data = content.encode() if isinstance(content, str) else content
        want = hashlib.sha256(data).hexdigest()
        state = self.file_state(path)
        if state.exists and state.sha256 == want:
            if (state.mode, state.owner, state.group) == (mode.zfill(4), owner, group):
                return False
            self.run(
                f"chown {owner}:{group} {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}"
            )
            return True
        # Upload into a directory only the login user can read, then install atomically
        # with the final mode, so a secret is never readable by others even for a moment.
        tmpdir = self.run("mktemp -d", sudo=False).stdout.strip()
        try:
            staged = f"{tmpdir}/upload"
            self.conn.put(io.BytesIO(data), staged)
            self.run(
                f"install -D -m {mode} -o {owner} -g {group} {shlex.quote(staged)} {shlex.quote(path)}.kit-new"
                f" && mv -f {shlex.quote(path)}.kit-new {shlex.quote(path)}"
            )
        finally:
            self.run(f"rm -rf {shlex.quote(tmpdir)}", sudo=False, check=False)
        return True
