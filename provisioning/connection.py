"""SSH connections built explicitly from settings, never from the user's ~/.ssh/config."""

from __future__ import annotations

from fabric import Config, Connection
from paramiko import RejectPolicy


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
