"""fab upgrade records the version where the deployment reads it."""

from __future__ import annotations

from provisioning import upgrade_tasks


def test_a_settings_file_s_version_line_is_rewritten_keeping_the_rest(tmp_path):
    path = tmp_path / "onprem.yaml"
    path.write_text("# the server\nhost: h\nmlflow_version: 3.17.2  # pinned\nssh_user: admin\n")
    said = upgrade_tasks._record(None, str(path), "3.18.0")
    assert path.read_text() == "# the server\nhost: h\nmlflow_version: 3.18.0\nssh_user: admin\n"
    assert str(path) in said


def test_a_settings_file_without_a_version_gets_one(tmp_path):
    path = tmp_path / "onprem.yaml"
    path.write_text("host: h\n")
    upgrade_tasks._record(None, str(path), "3.18.0")
    assert path.read_text() == "host: h\nmlflow_version: 3.18.0\n"


def test_a_stack_gets_its_mlflow_version_config(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(upgrade_tasks.pulumi_cli, "config_set", lambda *a, **k: calls.append(a))
    access = tmp_path / "access.yaml"
    access.write_text("ssh_key_file: k\n")  # holds no version: the stack's stays the source
    said = upgrade_tasks._record("dev", str(access), "3.18.0")
    assert calls == [("dev", "mlflow-server:mlflowVersion", "3.18.0")]
    assert "pulumi up -s dev" in said and access.read_text() == "ssh_key_file: k\n"


def test_a_group_is_upgraded_by_the_rolling_bootstrap(monkeypatch, tmp_path):
    from provisioning import server_tasks
    from tests.unit.test_rolling import group

    rolled = []
    # 3.18.0 has no committed lock (provisioning/locks/): its packages resolve at install.
    unlocked = group(install_from_lock=False)
    monkeypatch.setattr(upgrade_tasks, "load_deployment", lambda c, stack, settings: unlocked)
    monkeypatch.setattr(
        server_tasks,
        "roll",
        lambda d, task, *_rest: rolled.append((d.hosts, d.mlflow_version, task)),
    )
    monkeypatch.setattr(upgrade_tasks, "on_host", None)  # never one host alone
    path = tmp_path / "group.yaml"
    path.write_text("hosts: [a, b]\n")
    upgrade_tasks.upgrade.body(None, "3.18.0", settings=str(path))
    assert rolled == [(group().hosts, "3.18.0", "upgrade")]
    assert "mlflow_version: 3.18.0" in path.read_text()
