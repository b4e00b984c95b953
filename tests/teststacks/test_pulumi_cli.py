"""The pulumi CLI wrapper against the stand-in CLI: errors, retries, config."""

from __future__ import annotations

import pytest

from provisioning import pulumi_cli

pytestmark = pytest.mark.unit


def test_missing_stack_is_its_own_error(pulumi_standin):
    with pytest.raises(pulumi_cli.StackNotFound) as raised:
        pulumi_cli.config_get_all("nope")
    assert raised.value.returncode == 255
    assert "no stack named 'nope' found" in str(raised.value)


def test_config_round_trip_and_stack_listing(pulumi_standin):
    pulumi_cli.stack_init("s1")
    pulumi_cli.config_set("s1", "mlflow-server:httpsAllowedCidrs", '["203.0.113.0/24"]')
    pulumi_cli.config_set("s1", "gcp:project", "p")
    assert pulumi_cli.config_get_all("s1") == {
        "mlflow-server:httpsAllowedCidrs": '["203.0.113.0/24"]',
        "gcp:project": "p",
    }
    assert [entry["name"] for entry in pulumi_cli.stack_list()] == ["s1"]
    assert pulumi_cli.stack_exists("s1") and not pulumi_cli.stack_exists("s2")


def test_stack_rm_of_a_removed_stack_is_not_an_error(pulumi_standin):
    pulumi_standin.add_stack("gone-soon", {"environment": "test"}, resources=0)
    assert pulumi_cli.stack_rm("gone-soon") is True
    assert pulumi_cli.stack_rm("gone-soon") is False


def test_stack_rm_refuses_a_stack_with_resources(pulumi_standin):
    pulumi_standin.add_stack("full", {"environment": "test"}, resources=3)
    with pytest.raises(pulumi_cli.PulumiError) as raised:
        pulumi_cli.stack_rm("full")
    assert pulumi_cli.has_resources_error(raised.value)


def test_transient_failures_are_retried_with_growing_waits(pulumi_standin):
    pulumi_standin.add_stack("s", {"environment": "test"}, resources=5)
    pulumi_standin.script(
        {"command": "destroy", "exit": 255, "output": "error: 503 Service Unavailable"},
        {"command": "destroy", "exit": 255, "output": "error: Throttling: Rate exceeded"},
    )
    waits = []
    pulumi_cli.with_retries(
        lambda attempt: pulumi_cli.destroy("s", refresh=attempt > 1),
        backoff=2,
        sleep=waits.append,
        say=lambda _: None,
    )
    assert waits == [2, 4]
    destroys = [call for call in pulumi_standin.calls() if call[0] == "destroy"]
    assert len(destroys) == 3
    assert "--refresh" not in destroys[0] and "--refresh" in destroys[2]
    assert pulumi_standin.stacks()["s"]["resources"] == 0


def test_permanent_failures_and_exhausted_retries_raise(pulumi_standin):
    pulumi_standin.add_stack("s", {"environment": "test"})
    pulumi_standin.script(
        {"command": "destroy", "exit": 255, "output": "error: AccessDenied: not authorized"}
    )
    with pytest.raises(pulumi_cli.PulumiError, match="AccessDenied"):
        pulumi_cli.with_retries(lambda _: pulumi_cli.destroy("s"), sleep=lambda _: None)
    pulumi_standin.script(*[{"command": "destroy", "exit": 255, "output": "timeout"}] * 3)
    with pytest.raises(pulumi_cli.PulumiError, match="timeout"):
        pulumi_cli.with_retries(
            lambda _: pulumi_cli.destroy("s"), attempts=3, sleep=lambda _: None, say=print
        )


def test_missing_cli_is_reported_plainly(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pulumi_cli.PulumiError, match="not on PATH"):
        pulumi_cli.stack_list()


def test_a_secret_setting_reaches_the_stack_on_stdin_never_on_a_command_line(pulumi_standin):
    pulumi_cli.stack_init("s1")
    pulumi_cli.config_set("s1", "mlflow-server:adminPassword", "hunter2-but-longer", secret=True)
    stored = pulumi_standin.load()["stacks"]["s1"]["config"]["mlflow-server:adminPassword"]
    assert stored == {"value": "hunter2-but-longer", "secret": True}
    assert not [call for call in pulumi_standin.calls() if "hunter2-but-longer" in " ".join(call)]
