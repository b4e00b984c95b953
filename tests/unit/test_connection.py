"""SSH connections: built from settings only, host keys checked against the pinned file."""

from __future__ import annotations

import paramiko
import pytest
from paramiko.ssh_exception import BadHostKeyException

from provisioning.connection import (
    UnknownHostKey,
    changed_host_key_message,
    connect,
    fingerprint,
    kit_known_hosts,
    open_when_ready,
)
from tests.unit.sshd import TinySshd


def test_a_pinned_known_hosts_file_refuses_unknown_keys(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(
        "203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8hV3S2DfP2r7fT0kXy0y3wqYbW6gq4cQm1Jr1r1r1\n"
    )
    conn = connect(host="203.0.113.10", user="admin", known_hosts_file=str(known))
    assert conn.client._policy.accept_new is False
    assert conn.client.get_host_keys().lookup("203.0.113.10") is not None


def test_the_users_ssh_config_is_never_read():
    conn = connect(host="203.0.113.10", user="admin", key_file="/k")
    assert conn.config.load_ssh_configs is False
    assert conn.connect_kwargs == {
        "look_for_keys": False,
        "allow_agent": False,
        "key_filename": ["/k"],
    }


@pytest.fixture
def sshd(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    server = TinySshd()
    key_file = tmp_path / "id_ecdsa"
    server.client_key.write_private_key_file(str(key_file))
    server.key_file = str(key_file)
    yield server
    server.close()


def open_to(sshd, **settings):
    conn = connect(
        host="127.0.0.1", port=sshd.port, user="admin", key_file=sshd.key_file, **settings
    )
    open_when_ready(conn, timeout=5)
    return conn.run("true", hide=True, in_stream=False).stdout.strip()


def test_an_unknown_host_is_refused_before_anything_is_sent_naming_its_fingerprint(sshd):
    with pytest.raises(UnknownHostKey) as refused:
        open_to(sshd)
    assert fingerprint(sshd.host_key) in str(refused.value)
    assert "--accept-new-host-key" in str(refused.value)
    assert sshd.auth_attempts == []
    assert not kit_known_hosts().exists()


def test_accept_new_records_the_key_and_later_runs_need_no_flag(sshd):
    assert open_to(sshd, accept_new_host_key=True) == "ok"
    assert kit_known_hosts().read_text() == sshd.known_hosts_line
    assert open_to(sshd) == "ok"
    assert kit_known_hosts().read_text() == sshd.known_hosts_line  # recorded once


def test_a_changed_key_is_refused_even_with_accept_new_and_nothing_is_sent(sshd):
    kit_known_hosts().parent.mkdir(parents=True)
    other = paramiko.ECDSAKey.generate()
    kit_known_hosts().write_text(
        f"[127.0.0.1]:{sshd.port} {other.get_name()} {other.get_base64()}\n"
    )
    with pytest.raises(BadHostKeyException) as refused:
        open_to(sshd, accept_new_host_key=True)
    assert sshd.auth_attempts == []
    message = changed_host_key_message(refused.value, str(kit_known_hosts()))
    assert fingerprint(sshd.host_key) in message and fingerprint(other) in message
    assert "ssh-keygen -R" in message


def test_a_pinned_key_is_the_only_one_accepted(sshd):
    assert open_to(sshd, host_key=sshd.public_key) == "ok"
    other = paramiko.ECDSAKey.generate()
    with pytest.raises(BadHostKeyException):
        open_to(sshd, host_key=f"{other.get_name()} {other.get_base64()}")
    assert sshd.auth_attempts == ["admin"]  # only the connection to the right key logged in
    assert not kit_known_hosts().exists()


def test_a_pinned_key_that_stays_wrong_is_refused_after_the_grace_period(sshd):
    other = paramiko.ECDSAKey.generate()
    conn = connect(host="127.0.0.1", port=sshd.port, user="admin", key_file=sshd.key_file,
                   host_key=f"{other.get_name()} {other.get_base64()}")  # fmt: skip
    notes: list[str] = []
    with pytest.raises(BadHostKeyException):
        open_when_ready(conn, notes.append, timeout=5, pinned_key_grace=4)
    assert notes and "BadHostKeyException" in notes[0]
    assert sshd.auth_attempts == []
