"""SSH connections built explicitly from settings, never from the user's ~/.ssh/config."""

from __future__ import annotations

import time
from collections.abc import Callable

from fabric import Config, Connection
from paramiko import RejectPolicy
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)


def connect(
    *,
    host: str,
    user: str,
    port: int = 22,
    key_file: str | None = None,
    known_hosts_file: str | None = None,
    proxy_command: str | None = None,
    timeout: float = 15,
) -> Connection:
    """A Fabric connection to ``user@host``.

    With ``known_hosts_file`` the host key must be listed there (unknown keys
    are refused); without it, the first key seen is accepted, as ``ssh`` does
    for a new cloud VM.
    """
    config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True}})
    connect_kwargs: dict = {"look_for_keys": key_file is None, "allow_agent": key_file is None}
    if key_file:
        connect_kwargs["key_filename"] = [key_file]
    # A string gateway is an OpenSSH-style ProxyCommand (IAP tunnel, SSM session).
    conn = Connection(
        host=host,
        user=user,
        port=port,
        config=config,
        gateway=proxy_command,
        connect_kwargs=connect_kwargs,
        connect_timeout=timeout,
    )
    if known_hosts_file:
        conn.client.load_host_keys(known_hosts_file)
        conn.client.set_missing_host_key_policy(RejectPolicy())
    return conn


#: How long a fresh VM may take before sshd answers, and before its keys are installed.
SSH_READY_TIMEOUT_S = 180
AUTH_READY_TIMEOUT_S = 45


def open_when_ready(
    conn: Connection,
    note: Callable[[str], None] = lambda _m: None,
    timeout: float = SSH_READY_TIMEOUT_S,
) -> None:
    """Open ``conn``, retrying while the host boots: sshd not listening yet, or the login key
    not installed yet (cloud-init, Google's guest agent). A host key that is unknown or
    changed is never retried.
    """
    started = time.monotonic()
    while True:
        try:
            conn.open()
            return
        except BadHostKeyException:
            raise
        except AuthenticationException as error:
            retry, limit = error, AUTH_READY_TIMEOUT_S
        except SSHException as error:
            if "known_hosts" in str(error) or "host key" in str(error).lower():
                raise
            retry, limit = error, timeout
        except (NoValidConnectionsError, OSError, EOFError) as error:
            retry, limit = error, timeout
        waited = time.monotonic() - started
        if waited > limit:
            raise retry
        note(f"waiting for SSH on {conn.host}:{conn.port} ({type(retry).__name__}, {waited:.0f}s)")
        time.sleep(3)
