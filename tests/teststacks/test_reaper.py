"""`fab reap`: only test stacks past their TTL, and only expired orphans of gone test stacks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from invoke import Context

from provisioning import stack_tasks
from provisioning.teststacks import aws as aws_api
from provisioning.teststacks import reaper
from teststacks.aws_leaks import REGION, aws_stack_config, leak_stack

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
PAST, FUTURE = "202001010000", "209901010000"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("config", "verdict"),
    [
        ({"environment": "test", "expiresAt": "202501311159"}, "expired"),
        ({"environment": "test", "expiresAt": "202501311200"}, "expired"),
        ({"environment": "test", "expiresAt": "202501311201"}, "not expired"),
        ({"environment": "prod", "expiresAt": "202001010000"}, "not a test stack"),
        ({"environment": "dev", "expiresAt": "202001010000"}, "not a test stack"),
        ({"expiresAt": "202001010000"}, "not a test stack (environment: unset)"),
        ({"environment": "test"}, "without a valid expiresAt"),
        ({"environment": "test", "expiresAt": "soon"}, "without a valid expiresAt"),
        (None, "vanished"),
    ],
)
def test_judge(config, verdict):
    qualified = None if config is None else {f"mlflow-server:{k}": v for k, v in config.items()}
    result = reaper.judge("s", qualified, NOW)
    if verdict == "expired":
        assert isinstance(result, reaper.Expired)
    else:
        assert isinstance(result, str) and verdict in result


def seed_stacks(standin):
    standin.add_stack("test-old", aws_stack_config(expires=PAST))
    standin.add_stack("test-fresh", aws_stack_config(expires=FUTURE))
    standin.add_stack("prod", aws_stack_config(environment="prod", expires=PAST))
    standin.add_stack("dev-alice", aws_stack_config(environment="dev", expires=PAST))
    standin.add_stack("test-noexpiry", {"environment": "test", "cloud": "aws"})
    standin.add_stack("test-busy", aws_stack_config(expires=PAST), updateInProgress=True)


KEPT = ("test-fresh", "prod", "dev-alice", "test-noexpiry", "test-busy")


@pytest.mark.unit
def test_dry_run_only_lists(pulumi_standin, capsys):
    seed_stacks(pulumi_standin)
    before = pulumi_standin.stacks()
    stack_tasks.reap(Context(), dry_run=True)
    out = capsys.readouterr().out
    assert "expired test-old" in out
    for name in KEPT:
        assert f"keep   {name}:" in out
    assert "dry run: 1 stack(s)" in out
    assert pulumi_standin.stacks() == before
    assert not {"destroy", "stack rm"} & set(pulumi_standin.commands())


@pytest.mark.service
def test_reap_tears_down_expired_test_stacks_and_orphans_only(aws, pulumi_standin, capsys):
    seed_stacks(pulumi_standin)
    orphan = leak_stack(aws, "test-gone-1", "gone1", expires=PAST)
    young_orphan = leak_stack(aws, "test-gone-2", "gone2", expires=FUTURE)
    live = leak_stack(aws, "test-fresh", "fresh", expires=PAST)  # its stack still exists
    dev_orphan = leak_stack(aws, "dev-gone", "devgone", env="dev", expires=PAST)

    stack_tasks.reap(Context(), cloud="aws", region=REGION)

    out = capsys.readouterr().out
    assert "reaped test-old: clean" in out
    destroyed = [
        call[call.index("--stack") + 1] for call in pulumi_standin.calls() if call[0] == "destroy"
    ]
    assert destroyed == ["test-old"]
    assert set(pulumi_standin.stacks()) == set(KEPT)
    finder = aws_api.Aws(REGION)
    remaining = {item.name for item in aws_api.find(finder, {"mlflow-kit-env": None})}
    assert not set(orphan.values()) & remaining
    assert f"removed orphan aws s3 bucket {orphan['bucket']}" in out
    for kept in (young_orphan, live, dev_orphan):
        assert set(kept.values()) <= remaining
