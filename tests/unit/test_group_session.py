"""Tasks other than bootstrap, upgrade and status work on one server: a group's settings
are refused by them, and ``fab -H`` picks one server of the group."""

from __future__ import annotations

import pytest
import yaml
from invoke.exceptions import Exit

from provisioning import session
from tests.unit.test_group_settings import HOSTS, file_settings


def test_a_task_on_one_server_refuses_a_group_before_connecting(monkeypatch):
    from tests.unit.test_rolling import group

    monkeypatch.setattr(session, "connect", None)  # never reached
    with (
        pytest.raises(Exit, match="fab rotate-kek works on one server") as refused,
        session.on_host(group(), "rotate-kek"),
    ):
        pass
    assert "fab -H HOST rotate-kek" in str(refused.value)


def test_fab_h_picks_one_server_of_the_group(tmp_path):
    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(file_settings()))

    class Context:
        host, original_host, user, port = HOSTS[1], HOSTS[1], "admin", None

    one = session.load_deployment(Context(), None, str(path))
    assert one.host == HOSTS[1] and one.hosts == ()
    assert session.load_deployment(object(), None, str(path)).hosts == tuple(HOSTS)
