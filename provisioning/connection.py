"""SSH connections built explicitly from settings, never from the user's ~/.ssh/config."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from fabric import Config, Connection
from paramiko import MissingHostKeyPolicy, PKey
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)

#: Where hosts' keys are recorded when no known_hosts_file is set (XDG state directory).
KNOWN_HOSTS_NAME = "mlflow-kit/known_hosts"


def kit_known_hosts() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / KNOWN_HOSTS_NAME


def fingerprint(key: PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UnknownHostKey(SSHException):
    """The host offered a key nothing vouches for; nothing was sent to it."""


class HostKeyPolicy(MissingHostKeyPolicy):
    """Unknown keys are refused, naming the key offered, unless the operator said to accept
    and record a new host's key (``--accept-new-host-key``, as OpenSSH's accept-new)."""

    def __init__(self, record_in: Path | None, accept_new: bool):
        self.record_in, self.accept_new = record_in, accept_new

    def missing_host_key(self, client, hostname, key):
        offered = f"{key.get_name()} {fingerprint(key)}"
        if not self.accept_new or self.record_in is None:
            where = f" in {self.record_in}" if self.record_in else ""
            raise UnknownHostKey(
                f"the host key of {hostname} is unknown{where}: it offers {offered}. Nothing was "
                "sent to it. Check that fingerprint on the host itself (its serial console: "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then run fab bootstrap "
                "again with --accept-new-host-key, or set known_hosts_file or ssh_host_key"
            )
        self.record_in.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.record_in.open("a") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def connect(
    *,
    host: str,
    user: str,
    port: int = 22,
    key_file: str | None = None,
    known_hosts_file: str | None = None,
    host_key: str | None = None,
    accept_new_host_key: bool = False,
    proxy_command: str | None = None,
    timeout: float = 15,
) -> Connection:
    """A Fabric connection to ``user@host`` that never talks to a host it cannot vouch for.

    The host's key must be ``host_key`` (an OpenSSH public key, e.g. from the stack
    outputs), or listed in ``known_hosts_file``, or recorded in the kit's own
    known_hosts (:func:`kit_known_hosts`); a key seen for the first time is
    recorded there only with ``accept_new_host_key``. Anything else is refused
    before authentication, so no credential reaches the host.
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
    lookup = host if port == 22 else f"[{host}]:{port}"
    keys = conn.client.get_host_keys()
    if host_key:
        kind, data = host_key.split()[:2]
        keys.add(lookup, kind, PKey.from_type_string(kind, base64.b64decode(data)))
        conn.client.set_missing_host_key_policy(HostKeyPolicy(None, False))
    elif known_hosts_file:
        conn.client.load_host_keys(known_hosts_file)
        conn.client.set_missing_host_key_policy(HostKeyPolicy(None, False))
    else:
        record = kit_known_hosts()
        if record.exists():
            keys.load(str(record))
        conn.client.set_missing_host_key_policy(HostKeyPolicy(record, accept_new_host_key))
    return conn


def changed_host_key_message(error: BadHostKeyException, known_from: str) -> str:
    return (
        f"the host key of {error.hostname} changed: it offers {error.key.get_name()} "
        f"{fingerprint(error.key)}, but {known_from} holds {fingerprint(error.expected_key)}. "
        "Nothing was sent to it. If the host was rebuilt, check the new fingerprint on the host "
        "itself (its serial console: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), "
        f"then remove the old key (`ssh-keygen -R {error.hostname} -f FILE`) or update the setting"
    )


#: How long a fresh VM may take before sshd answers, and before its keys are installed.
SSH_READY_TIMEOUT_S = 180
AUTH_READY_TIMEOUT_S = 45


def open_when_ready(
    conn: Connection,
    note: Callable[[str], None] = lambda _m: None,
    timeout: float = SSH_READY_TIMEOUT_S,
    pinned_key_grace: float = 0,
) -> None:
    """Open ``conn``, retrying while the host boots: sshd not listening yet, or the login key
    not installed yet (cloud-init, Google's guest agent).

    An unknown host key is never retried. A changed one is waited out for
    ``pinned_key_grace`` seconds only (a fresh VM serves its image's key until its
    first boot installs the pinned one); nothing is sent to a host meanwhile, as
    the key is checked before authentication.
    """
    started = time.monotonic()
    while True:
        try:
            conn.open()
            return
        except UnknownHostKey:
            raise
        except BadHostKeyException as error:
            retry, limit = error, pinned_key_grace
        except AuthenticationException as error:
            retry, limit = error, AUTH_READY_TIMEOUT_S
        except (SSHException, NoValidConnectionsError, OSError, EOFError) as error:
            retry, limit = error, timeout
        waited = time.monotonic() - started
        if waited >= limit:
            raise retry
        note(f"waiting for SSH on {conn.host}:{conn.port} ({type(retry).__name__}, {waited:.0f}s)")
        time.sleep(3)
