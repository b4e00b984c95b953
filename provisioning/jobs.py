"""Long remote work (apt, the conda build) as transient systemd units that outlive the session.

``run_job`` starts the work as ``mlflow-kit-<name>.service`` with ``systemd-run
--wait``: when the operator's connection drops, systemd keeps the work going
(no orphan process tied to a dead session, nothing half-killed), and the next
run finds the unit still active and waits for it instead of starting the work
a second time. A failure ends in a RemoteError carrying the unit's own journal
(pip's or apt's error), a timeout in one naming the unit to follow.
"""

from __future__ import annotations

import shlex

from provisioning import facts, waiting
from provisioning.transport import Host, RemoteError

UNIT_PREFIX = "mlflow-kit-"
RUNNING_STATES = ("active", "activating", "deactivating", "reloading")
POLL_S = 2
JOURNAL_LINES = 40


def unit_name(name: str) -> str:
    return f"{UNIT_PREFIX}{name}.service"


def run_job(
    host: Host,
    name: str,
    command: str,
    *,
    timeout: float,
    description: str,
    env: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
) -> str:
    """Run ``command`` (a shell command, as root) as the unit ``mlflow-kit-<name>``; wait for it.

    Returns ``"started"`` or ``"attached"`` (an earlier run's unit was still at
    work, and this run waited for it instead). The caller checks the result it
    needs (a marker file, an installed package): an attached unit may have been
    started with other arguments. ``properties`` are unit settings such as
    ``EnvironmentFile`` (secrets reach the work through it, never its command line)
    or ``User``.
    """
    unit = unit_name(name)
    if _state(host, unit).get("ActiveState") in RUNNING_STATES:
        host.note(f"{unit} from an earlier run is still at work: waiting for it")
        _wait(host, unit, timeout)
        return "attached"
    argv = [
        "systemd-run",
        f"--unit={unit}",
        f"--description={shlex.quote(description)}",
        "--quiet",
        "--wait",
        "--service-type=exec",
        "--property=TimeoutStartSec=infinity",
        *(f"--setenv={shlex.quote(f'{k}={v}')}" for k, v in sorted((env or {}).items())),
        *(f"--property={shlex.quote(f'{k}={v}')}" for k, v in (properties or {}).items()),
        "/bin/sh",
        "-c",
        shlex.quote(command),
    ]
    start = f"systemctl reset-failed {unit} 2>/dev/null; {' '.join(argv)}"
    result = host.run(start, check=False, timeout=timeout)
    if result.exited != 0:
        raise host.error(command, result.exited, _journal(host, unit))
    return "started"


def _state(host: Host, unit: str) -> dict[str, str]:
    return host.read(facts.unit_properties(unit, "ActiveState", "Result", "ExecMainStatus"))


def _wait(host: Host, unit: str, timeout: float) -> None:
    def late(_state: dict) -> RemoteError:
        return host.error(
            f"wait for {unit}",
            -1,
            f"{unit} still running after {timeout:.0f}s; it goes on by itself: run the "
            f"task again to wait for it, or follow it with `journalctl -fu {unit}` on the host",
        )

    state = waiting.until(
        host,
        lambda: _state(host, unit),
        lambda s: s.get("ActiveState") not in RUNNING_STATES,
        timeout=timeout,
        poll=POLL_S,
        late=late,
        note=lambda _s, seconds: f"waiting for {unit} ({seconds:.0f}s)",
    )
    if state.get("Result") not in ("success", ""):
        raise host.error(f"wait for {unit}", 1, _journal(host, unit))


def _journal(host: Host, unit: str) -> str:
    return host.read(facts.journal(f"-u {unit}", JOURNAL_LINES, "cat"))
