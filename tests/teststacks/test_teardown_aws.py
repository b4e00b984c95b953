"""`fab teardown` against moto: leftovers named with removal commands, clean runs, re-runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from invoke import Context
from invoke.exceptions import Exit

from provisioning import stack_tasks
from provisioning.teststacks import aws as aws_api
from teststacks.aws_leaks import REGION, aws_stack_config, leak_stack
from teststacks.conftest import REPO

pytestmark = pytest.mark.service
STACK = "test-ci-7"


def fab(standin, *args) -> subprocess.CompletedProcess:
    """`fab ARGS` as a user runs it, with the stand-in pulumi first on PATH."""
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=REPO,
        env=standin.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_leaked_resources_are_listed_by_name_with_removal_commands(aws, pulumi_standin):
    pulumi_standin.add_stack(STACK, aws_stack_config())
    leaked = leak_stack(aws, STACK, "ci7")
    other = leak_stack(aws, "test-ci-8", "ci8")  # another stack's: not this teardown's business
    aws.client("ec2").terminate_instances(InstanceIds=[other["instance"]])

    result = fab(pulumi_standin, "teardown", "--stack", STACK)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "NOT CLEAN: 7 resource(s)" in out
    for name in leaked.values():
        assert name in out
    for name in other.values():
        assert name not in out
    assert (
        f"aws ec2 terminate-instances --instance-ids {leaked['instance']} --region {REGION}" in out
    )
    assert f"aws s3 rb s3://{leaked['bucket']} --force" in out
    assert f"aws rds delete-db-instance --db-instance-identifier {leaked['db']}" in out
    assert f"aws ec2 delete-security-group --group-id {leaked['security_group']}" in out
    assert f"aws iam delete-role --role-name {leaked['role']}" in out
    assert f"aws iam delete-instance-profile --instance-profile-name {leaked['profile']}" in out
    assert f"leftover(s) of {STACK}" in result.stderr
    # Pulumi was asked to destroy, then to remove the stack, in that order.
    assert pulumi_standin.commands() == ["config", "stack export", "destroy", "stack rm"]
    assert STACK not in pulumi_standin.stacks()


def test_clean_teardown_exits_zero(aws, pulumi_standin):
    pulumi_standin.add_stack(STACK, aws_stack_config())
    # What destroy leaves visible: a terminated instance, which no longer bills.
    gone = leak_stack(aws, STACK, "ci7")
    for item in aws_api.find(aws_api.Aws(REGION), {"mlflow-kit-stack": STACK}):
        aws_api.remove(aws_api.Aws(REGION), item)
    assert aws.client("ec2").describe_instances(InstanceIds=[gone["instance"]])["Reservations"]

    result = fab(pulumi_standin, "teardown", "--stack", STACK)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"clean: no resource of stack {STACK} remains" in result.stdout
    assert "LEFTOVER" not in result.stdout


def test_prod_class_stack_is_refused_without_the_flag(aws, pulumi_standin):
    pulumi_standin.add_stack("prod", aws_stack_config(environment="prod"))

    refused = fab(pulumi_standin, "teardown", "--stack", "prod")

    assert refused.returncode == 2
    assert "prod-class" in refused.stderr and "--allow-prod" in refused.stderr
    assert "destroy" not in pulumi_standin.commands()
    assert pulumi_standin.stacks()["prod"]["resources"] == 9

    # Allowed, but prod's deletion and termination protection would fail the destroy:
    # refused before anything is touched, saying what to switch off first.
    protected = fab(pulumi_standin, "teardown", "--stack", "prod", "--allow-prod")
    assert protected.returncode == 2, protected.stdout + protected.stderr
    assert "--no-deletion-protection" in protected.stderr
    assert "--no-disable-api-termination" in protected.stderr
    assert "destroy" not in pulumi_standin.commands()

    # The operator switched protection off at the API and refreshed the state.
    state = pulumi_standin.load()
    state["stacks"]["prod"]["protected"] = []
    pulumi_standin.save(state)
    allowed = fab(pulumi_standin, "teardown", "--stack", "prod", "--allow-prod")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "prod" not in pulumi_standin.stacks()


def test_interrupted_after_destroy_before_stack_rm_completes_on_rerun(aws, pulumi_standin, capsys):
    pulumi_standin.add_stack(STACK, aws_stack_config())
    pulumi_standin.script(
        {"command": "stack rm", "exit": 137, "output": "signal: killed (runner cancelled)"}
    )
    with pytest.raises(Exit) as first:
        stack_tasks.teardown(Context(), stack=STACK)
    assert first.value.code == 1
    assert pulumi_standin.stacks()[STACK]["resources"] == 0  # destroyed, not removed

    stack_tasks.teardown(Context(), stack=STACK)

    assert STACK not in pulumi_standin.stacks()
    assert pulumi_standin.commands()[-4:] == ["config", "stack export", "destroy", "stack rm"]
    assert f"clean: no resource of stack {STACK} remains" in capsys.readouterr().out


def test_removal_that_happened_but_reported_failure_is_treated_as_done(aws, pulumi_standin, capsys):
    pulumi_standin.add_stack(STACK, aws_stack_config())
    pulumi_standin.script(
        {"command": "stack rm", "exit": 255, "removed": True, "output": "error: connection reset"}
    )
    stack_tasks.teardown(Context(), stack=STACK)
    out = capsys.readouterr().out
    assert "already removed" in out and "clean:" in out


def test_rerun_after_the_stack_is_gone_only_checks_and_needs_the_cloud(aws, pulumi_standin, capsys):
    leaked = leak_stack(aws, STACK, "ci7")
    with pytest.raises(Exit) as no_cloud:
        stack_tasks.teardown(Context(), stack=STACK)
    assert no_cloud.value.code == 2 and "--cloud" in no_cloud.value.message

    with pytest.raises(Exit) as checked:
        stack_tasks.teardown(Context(), stack=STACK, cloud="aws", region=REGION)
    assert checked.value.code == 1
    out = capsys.readouterr().out
    assert leaked["bucket"] in out and leaked["role"] in out
    assert "destroy" not in pulumi_standin.commands()


def test_destroy_failing_halfway_is_retried_or_finished_by_a_rerun(aws, pulumi_standin, capsys):
    pulumi_standin.add_stack(STACK, aws_stack_config())
    pulumi_standin.script(
        # eventual consistency: retried within the run, with a refresh first
        {
            "command": "destroy",
            "exit": 255,
            "resources": 4,
            "output": "error: deleting security group: DependencyViolation: resource has a "
            "dependent object",
        },
        # a real error: the run stops and says how to continue
        {"command": "destroy", "exit": 255, "resources": 2, "output": "error: update failed"},
    )
    with pytest.raises(Exit) as failed:
        stack_tasks.teardown(Context(), stack=STACK)
    assert failed.value.code == 1
    assert f"run `fab teardown --stack {STACK}` again" in failed.value.message
    destroys = [call for call in pulumi_standin.calls() if call[0] == "destroy"]
    assert len(destroys) == 2 and "--refresh" in destroys[1]
    assert pulumi_standin.stacks()[STACK]["resources"] == 2
    assert "stack rm" not in pulumi_standin.commands()

    stack_tasks.teardown(Context(), stack=STACK)

    assert STACK not in pulumi_standin.stacks()
    assert "clean:" in capsys.readouterr().out
