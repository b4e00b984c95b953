"""A tiny SSH server on loopback (paramiko's server side), for host-key tests.

It has a host key of its own, accepts one client key, answers any command with
``ok`` and records every authentication attempt, so a test can show that a client
refusing the host key sent nothing.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import paramiko


class _Server(paramiko.ServerInterface):
    def __init__(self, owner: TinySshd):
        self.owner = owner

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        self.owner.auth_attempts.append(username)
        ok = key.get_base64() == self.owner.client_key.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return (
            paramiko.OPEN_SUCCEEDED
            if kind == "session"
            else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel, command):
        def answer():
            channel.sendall(b"ok\n")
            channel.send_exit_status(0)
            channel.close()

        # The answer goes out once the request is acknowledged.
        threading.Timer(0.05, answer).start()
        return True


@dataclass
class TinySshd:
    host_key: paramiko.PKey = field(default_factory=paramiko.ECDSAKey.generate)
    client_key: paramiko.PKey = field(default_factory=paramiko.ECDSAKey.generate)
    auth_attempts: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    @property
    def public_key(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            transport = paramiko.Transport(client)
            transport.add_server_key(self.host_key)
            try:
                transport.start_server(server=_Server(self))
            except (paramiko.SSHException, EOFError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)
