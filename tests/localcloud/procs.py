"""Starting and stopping the local cloud's processes, always by PID."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int):
    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may already be gone between fork and prctl.
        if os.getppid() == 1:
            os.kill(os.getpid(), sig)

    return setup


def spawn(
    argv: list[str],
    *,
    log: Path,
    tied: bool,
    stop_signal: int = signal.SIGTERM,
    user: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``argv`` in its own session, output to ``log``.

    ``tied`` processes get ``stop_signal`` when the process that started them
    dies (tests, even on SIGKILL); untied ones outlive it (``make demo``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(stop_signal) if tied else None,
            user=user,
            cwd=cwd,
            env=env,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop(pid: int, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Send ``sig`` to ``pid``, wait up to ``timeout``, then SIGKILL."""
    if not alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def free_port(address: str) -> int:
    """A TCP port free on ``address`` right now (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def wait_for(check, *, what: str, timeout: float, interval: float = 0.2):
    """Call ``check`` until it returns a truthy value; raise naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last_error})")


def wait_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    """Until the server at ``url`` answers /health 200 (four minutes at most); a server that
    exits or never answers fails the test with the tail of its ``log``."""
    import urllib.request

    for _ in range(240):
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise AssertionError(f"mlflow server never answered /health at {url}: {log}")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a set-up command; raise with its stderr tail when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise RuntimeError(f"`{' '.join(argv)}` exited {result.returncode}: {tail}")
    return result
