"""SSH connections: built from settings only, host keys checked against the pinned file."""

from __future__ import annotations

from paramiko import RejectPolicy

from provisioning.connection import connect


def test_a_pinned_known_hosts_file_refuses_unknown_keys(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(
        "203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8hV3S2DfP2r7fT0kXy0y3wqYbW6gq4cQm1Jr1r1r1\n"
    )
    conn = connect(host="203.0.113.10", user="admin", known_hosts_file=str(known))
    assert isinstance(conn.client._policy, RejectPolicy)
    assert conn.client.get_host_keys().lookup("203.0.113.10") is not None


def test_the_users_ssh_config_is_never_read():
    conn = connect(host="203.0.113.10", user="admin", key_file="/k")
    assert conn.config.load_ssh_configs is False
    assert conn.connect_kwargs == {
        "look_for_keys": False,
        "allow_agent": False,
        "key_filename": ["/k"],
    }
