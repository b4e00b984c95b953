"""One task at a time per host: a lock held on an SSH channel of its own.

``flock`` on ``/run/lock/mlflow-kit.lock`` runs for as long as the task holds
its channel open; when the task ends, or its connection drops, sshd closes the
channel, the holder exits and the lock is free again (``/run`` is emptied by a
reboot too). Long work started by a task runs as systemd units
(provisioning.jobs) and goes on without the lock; the next holder attaches to it.
"""

from __future__ import annotations

import shlex
import time
from contextlib import contextmanager

from provisioning.transport import Host

LOCK_FILE = "/run/lock/mlflow-kit.lock"
HOLDER_FILE = "/run/lock/mlflow-kit.holder"
BUSY_EXIT = 75
HELD = "held"


class HostBusy(RuntimeError):
    """Another kit task holds the host's lock."""


def lock_command(who: str) -> str:
    holder = f"printf '%s\\n' {shlex.quote(who)} > {HOLDER_FILE}; echo {HELD}; exec cat >/dev/null"
    inner = f"flock -n -E {BUSY_EXIT} {LOCK_FILE} sh -c {shlex.quote(holder)}"
    return f"sudo -n sh -c {shlex.quote(inner)}"


@contextmanager
def host_lock(host: Host, who: str, timeout: float = 30):
    """Hold the host's kit lock while the block runs; HostBusy naming the holder if taken.

    ``who`` says who holds it (user, machine, task), for the message another
    operator gets.
    """
    channel = host.conn.client.get_transport().open_session()
    try:
        channel.exec_command(lock_command(who))
        channel.settimeout(timeout)
        answer = b""
        deadline = time.monotonic() + timeout
        while not answer.endswith(b"\n") and time.monotonic() < deadline:
            chunk = channel.recv(64)
            if not chunk:
                break
            answer += chunk
        if answer.strip() != HELD.encode():
            status = channel.recv_exit_status()
            if status == BUSY_EXIT:
                holder = host.run(f"cat {HOLDER_FILE} 2>/dev/null || true").stdout.strip()
                raise HostBusy(
                    f"[{host.name}] another kit task is running there ({holder or 'holder unknown'});"
                    " wait for it to finish, then run this one again"
                )
            raise host.error(lock_command(who), status, channel.recv_stderr(4096).decode())
        yield
    finally:
        channel.close()
