"""The one place the kit runs the ``pulumi`` CLI.

Everything that needs Pulumi (stack outputs for bootstrap, test stacks,
teardown) goes through ``run`` so tests can put a stand-in ``pulumi`` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class PulumiError(RuntimeError):
    """A pulumi command failed; carries the command, exit code and stderr tail."""

    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.args_list, self.returncode, self.stderr = args, returncode, stderr
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        super().__init__(f"`pulumi {' '.join(args)}` exited {returncode}:\n{tail}")


def executable() -> str:
    found = shutil.which("pulumi")
    if found is None:
        raise PulumiError(
            [], 127, "the pulumi CLI is not on PATH; install it (see README, 'The cloud path')"
        )
    return found


def run(args: list[str], *, cwd: Path = REPO_ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``pulumi ARGS`` non-interactively in the project directory."""
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
        raise PulumiError(args, result.returncode, result.stderr)
    return result


def stack_outputs(stack: str) -> dict:
    """The stack's outputs with secrets revealed (only ever held in memory)."""
    result = run(["stack", "output", "--json", "--show-secrets", "--stack", stack])
    return json.loads(result.stdout or "{}")
