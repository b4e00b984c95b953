"""The one place the kit runs the ``pulumi`` CLI.

Everything that needs Pulumi (stack outputs for bootstrap, test stacks,
teardown) goes through ``run`` so tests can put a stand-in ``pulumi`` on PATH.
Every command names its stack explicitly (``--stack``) so that nothing depends
on which stack happens to be selected in the working directory.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Oldest CLI the kit works with: Pulumi.yaml's ``type: object`` needs 3.187.0
#: (pulumi/pulumi#20132) and ``config set-all --json``, which stores lists and maps as
#: the structured values Pulumi.yaml's types ask for, 3.202.0 (pulumi/pulumi#19427).
MIN_VERSION = (3, 202, 0)
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")

# What the CLI prints when a stack is missing, depending on backend and command.
_NO_STACK = re.compile(r"no stack named|stack .* not found|could not find stack", re.I)
_HAS_RESOURCES = re.compile(r"still has resources", re.I)
# Failures worth another attempt: throttling, flaky networks, the provider's
# eventual consistency (a security group still "in use" by an instance that is
# being terminated), and another update that is about to finish.
_TRANSIENT = re.compile(
    r"timed? ?out|timeout|connection (reset|refused)|broken pipe|temporar|try again"
    r"|throttl|rate ?limit|too many requests|\b429\b|\b50[0234]\b|service unavailable"
    r"|internal error|RequestLimitExceeded|DependencyViolation|resourceInUseByAnotherResource"
    r"|InvalidGroup\.InUse|is (still )?in use|currently in use|OperationInProgress"
    r"|operation in progress|InvalidDBInstanceState|conflict",
    re.I,
)


class PulumiError(RuntimeError):
    """A pulumi command failed; carries the command, exit code and stderr tail."""

    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.args_list, self.returncode, self.stderr = args, returncode, stderr
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        super().__init__(f"`pulumi {' '.join(args)}` exited {returncode}:\n{tail}")

    @property
    def stack_missing(self) -> bool:
        return bool(_NO_STACK.search(self.stderr))

    @property
    def transient(self) -> bool:
        return bool(_TRANSIENT.search(self.stderr))


class StackNotFound(PulumiError):
    """The named stack does not exist in the current backend."""


def executable() -> str:
    """The ``pulumi`` on PATH, once checked to be MIN_VERSION or newer."""
    found = shutil.which("pulumi")
    if found is None:
        raise PulumiError(
            [], 127, "the pulumi CLI is not on PATH; install it (see README, 'The cloud path')"
        )
    check_version(found)
    return found


@functools.cache
def check_version(path: str) -> tuple[int, int, int]:
    """``pulumi version`` of the CLI at ``path``; PulumiError when older than MIN_VERSION."""
    result = subprocess.run(
        [path, "version"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PULUMI_SKIP_UPDATE_CHECK="true"),
    )
    found = _VERSION.search(result.stdout)
    version = tuple(int(part) for part in found.groups()) if found else (0, 0, 0)
    if version < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        shown = result.stdout.strip() or result.stderr.strip() or "no version"
        raise PulumiError(
            ["version"],
            result.returncode or 1,
            f"the pulumi CLI at {path} is {shown}; the kit needs {wanted} or newer "
            "(Pulumi.yaml's object type and `config set-all --json`)",
        )
    return version


def run(
    args: list[str], *, cwd: Path = REPO_ROOT, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``pulumi ARGS`` non-interactively in the project directory.

    With ``check`` a failure raises PulumiError, or StackNotFound when the CLI
    says the stack does not exist.
    """
    env = dict(os.environ, PULUMI_SKIP_UPDATE_CHECK="true")
    result = subprocess.run(
        [executable(), *args, "--non-interactive"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        error = PulumiError(args, result.returncode, result.stderr)
        if error.stack_missing:
            raise StackNotFound(args, result.returncode, result.stderr)
        raise error
    return result


def stack_outputs(stack: str) -> dict:
    """The stack's outputs with secrets revealed (only ever held in memory)."""
    result = run(["stack", "output", "--json", "--show-secrets", "--stack", stack])
    return json.loads(result.stdout or "{}")


def with_retries(
    action: Callable[[int], T],
    *,
    attempts: int = 4,
    backoff: float = 5.0,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``action(attempt)`` until it succeeds, retrying only transient failures.

    Waits ``backoff``, then twice that, and so on between attempts; the last
    failure (or the first one that is not transient) is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action(attempt)
        except PulumiError as error:
            if isinstance(error, StackNotFound) or not error.transient or attempt == attempts:
                raise
            wait = backoff * 2 ** (attempt - 1)
            last = error.stderr.strip().splitlines()[-1:] or ["(no output)"]
            say(f"attempt {attempt}/{attempts} failed ({last[0][:200]}); retrying in {wait:.0f}s")
            sleep(wait)
    raise AssertionError("unreachable")


# --- stacks -------------------------------------------------------------------


def stack_export(stack: str) -> dict:
    """The stack's state (``pulumi stack export``): resources with their inputs and outputs."""
    return json.loads(run(["stack", "export", "--stack", stack]).stdout or "{}")


def stack_list() -> list[dict]:
    """Every stack of this project in the current backend (``pulumi stack ls --json``).

    Each entry has at least ``name``; the CLI also reports ``lastUpdate``,
    ``updateInProgress`` and ``resourceCount`` where the backend knows them.
    """
    result = run(["stack", "ls", "--json"])
    return json.loads(result.stdout or "[]")


def stack_init(stack: str) -> None:
    """Create ``stack`` and make it the selected stack."""
    run(["stack", "init", stack])


def stack_select(stack: str) -> None:
    run(["stack", "select", stack])


def stack_exists(stack: str) -> bool:
    return any(entry.get("name") == stack for entry in stack_list())


def stack_rm(stack: str) -> bool:
    """Remove an empty stack and its stack file; False when it was already gone.

    Refuses (PulumiError) while the stack still has resources: that is the
    signal that a destroy did not finish, and ``--force`` would hide it.
    """
    try:
        run(["stack", "rm", "--yes", "--stack", stack])
    except StackNotFound:
        return False
    return True


def resource_count(stack: str) -> int | None:
    """Resources in the stack's state (the stack itself counts for one), None if unknown."""
    for entry in stack_list():
        if entry.get("name") == stack:
            count = entry.get("resourceCount")
            return None if count is None else int(count)
    return None


# --- config -------------------------------------------------------------------


def config_set(stack: str, key: str, value: Any, *, secret: bool = False) -> None:
    """Set one config value of ``stack`` the way its Pulumi.yaml type wants it stored.

    A string goes through ``pulumi config set KEY VALUE`` (stored as text, which
    ``string``, ``integer`` and ``boolean`` keys accept). A list or map goes through
    ``pulumi config set-all --json``, the CLI's structured form: ``config set KEY
    '[...]'`` would store the text, which the CLI then refuses for an ``array`` or
    ``object`` key ("must be of type 'array<string>'").
    """
    if isinstance(value, list | dict):
        entry = {"value": json.dumps(value), "objectValue": value, "secret": secret}
        run(["config", "set-all", "--json", json.dumps({key: entry}), "--stack", stack])
        return
    args = ["config", "set", key, value, "--stack", stack]
    args.append("--secret" if secret else "--plaintext")
    run(args)


def config_get_all(stack: str) -> dict[str, str]:
    """The stack's config as ``{"namespace:key": value}``; secrets stay hidden.

    Raises StackNotFound when the stack does not exist.
    """
    result = run(["config", "--json", "--stack", stack])
    raw = json.loads(result.stdout or "{}")
    values = {}
    for key, entry in raw.items():
        if isinstance(entry, dict):
            if entry.get("secret"):
                values[key] = "[secret]"
                continue
            value = entry.get("objectValue", entry.get("value"))
        else:
            value = entry
        values[key] = value if isinstance(value, str) else json.dumps(value)
    return values


# --- updates ------------------------------------------------------------------


def up(stack: str) -> subprocess.CompletedProcess:
    """Deploy ``stack`` (``pulumi up --yes``); output is shown as it happens."""
    return _streamed(["up", "--yes", "--skip-preview", "--stack", stack])


def destroy(stack: str, *, refresh: bool = False) -> subprocess.CompletedProcess:
    """Delete every resource of ``stack``; safe to re-run after a partial failure.

    ``refresh`` first reconciles the state with the cloud, so resources that a
    failed attempt (or someone by hand) already deleted do not stop the run.
    """
    args = ["destroy", "--yes", "--skip-preview", "--stack", stack]
    if refresh:
        args.append("--refresh")
    return _streamed(args)


def _streamed(args: list[str]) -> subprocess.CompletedProcess:
    """Run a long pulumi command, echoing its output as it comes and keeping it for errors."""
    env = dict(os.environ, PULUMI_SKIP_UPDATE_CHECK="true")
    lines: list[str] = []
    with subprocess.Popen(
        [executable(), *args, "--non-interactive"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        returncode = process.wait()
    output = "".join(lines)
    if returncode != 0:
        # The engine reports resource errors among its progress output.
        error_type = StackNotFound if _NO_STACK.search(output) else PulumiError
        raise error_type(args, returncode, output)
    return subprocess.CompletedProcess(args, returncode, output, "")


def has_resources_error(error: PulumiError) -> bool:
    """The CLI refused ``stack rm`` because the stack still holds resources."""
    return bool(_HAS_RESOURCES.search(error.stderr))
