"""`fab test-stack`: a named, expiring, deployed test stack from an example stack file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from invoke import Context
from invoke.exceptions import Exit

from provisioning import stack_tasks
from provisioning.teststacks import create, naming

pytestmark = pytest.mark.unit
NOW = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)

EXAMPLE = """\
config:
  mlflow-server:cloud: gcp
  mlflow-server:environment: dev
  mlflow-server:httpsAllowedCidrs:
    - 203.0.113.0/24
  mlflow-server:labels:
    team: ml
  mlflow-server:tlsMode: self-signed
  mlflow-server:sshPublicKeys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEV4YW1wbGVLZXlSZXBsYWNlV2l0aFlvdXJPd25LZXkh ci@example.com
  gcp:project: mlflow-ci-1234
  gcp:region: europe-west1
  gcp:zone: europe-west1-b
  mlflow-server:sshAllowedCidrs: []
  mlflow-server:dbPassword:
    secure: v1:AAAABBBBCCCC
"""


@pytest.fixture
def example_dir(tmp_path, monkeypatch):
    (tmp_path / "Pulumi.gcp-test.yaml").write_text(EXAMPLE)
    monkeypatch.setattr(create, "STACKS_DIR", tmp_path)
    return tmp_path


def test_plan_copies_plain_settings_and_forces_test_expiry(example_dir):
    plan = create.plan("gcp", "4h", now=NOW, who="alice")
    assert plan.name == "test-alice-202501310800"
    assert plan.config["mlflow-server:environment"] == "test"
    assert plan.config["mlflow-server:expiresAt"] == "202501311200"
    # Lists and maps stay structured: the CLI must store them as objects.
    assert plan.config["mlflow-server:httpsAllowedCidrs"] == ["203.0.113.0/24"]
    assert plan.config["mlflow-server:labels"] == {"team": "ml"}
    assert plan.config["gcp:project"] == "mlflow-ci-1234"
    assert plan.skipped_secrets == ["mlflow-server:dbPassword"]
    assert "mlflow-server:dbPassword" not in plan.config


def test_command_line_pairs_override_the_file_but_not_the_kits_own_keys(example_dir):
    plan = create.plan(
        "gcp", "1h", now=NOW, who="a", pairs=["gcp:project=other", "tlsMode=provided"]
    )
    assert plan.config["gcp:project"] == "other"
    assert plan.config["mlflow-server:tlsMode"] == "provided"
    with pytest.raises(create.PlanError, match="set by test-stack itself"):
        create.plan("gcp", "1h", now=NOW, pairs=["environment=prod"])


def test_without_an_example_file_the_required_settings_must_be_given(tmp_path, monkeypatch):
    monkeypatch.setattr(create, "STACKS_DIR", tmp_path)
    with pytest.raises(create.PlanError, match="httpsAllowedCidrs"):
        create.plan("aws", "4h", now=NOW)
    plan = create.plan("aws", "4h", now=NOW, pairs=['httpsAllowedCidrs=["198.51.100.7/32"]'])
    assert plan.source is None and plan.config["mlflow-server:cloud"] == "aws"


def test_fab_test_stack_creates_configures_and_deploys(example_dir, pulumi_standin, capsys):
    stack_tasks.test_stack(Context(), cloud="gcp", ttl="2h", name="test-ci-42", config=[])
    stack = pulumi_standin.stacks()["test-ci-42"]
    config = {key: entry["value"] for key, entry in stack["config"].items()}
    assert config["mlflow-server:environment"] == "test"
    assert config["mlflow-server:cloud"] == "gcp"
    expires = naming.parse_expires(config["mlflow-server:expiresAt"])
    assert 119 * 60 <= (expires - naming.now_utc()).total_seconds() <= 121 * 60
    assert stack["resources"] > 0
    assert pulumi_standin.commands()[:2] == ["stack init", "stack select"]
    assert pulumi_standin.commands()[-1] == "up"
    up = pulumi_standin.calls()[-1]
    assert "--yes" in up and up[up.index("--stack") + 1] == "test-ci-42"
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "stack: test-ci-42"
    assert "mlflow-server:dbPassword" in out  # told which secret was not copied


def test_fab_test_stack_refuses_an_existing_name(example_dir, pulumi_standin):
    pulumi_standin.add_stack("test-ci-42", {"environment": "test"})
    with pytest.raises(Exit) as raised:
        stack_tasks.test_stack(Context(), cloud="gcp", name="test-ci-42", config=[])
    assert raised.value.code == 2
    assert "already exists" in raised.value.message
    assert "up" not in pulumi_standin.commands()


def test_a_failed_up_keeps_the_stack_and_says_how_to_remove_it(example_dir, pulumi_standin):
    pulumi_standin.script({"command": "up", "exit": 255, "output": "error: quota exceeded"})
    with pytest.raises(Exit) as raised:
        stack_tasks.test_stack(Context(), cloud="gcp", name="test-ci-43", config=[])
    assert raised.value.code == 1
    assert "fab teardown --stack test-ci-43" in raised.value.message
    assert "test-ci-43" in pulumi_standin.stacks()


def test_bad_ttl_is_refused_before_anything_is_created(example_dir, pulumi_standin):
    with pytest.raises(Exit) as raised:
        stack_tasks.test_stack(Context(), cloud="gcp", ttl="3 weeks", config=[])
    assert raised.value.code == 2 and "TTL" in raised.value.message
    assert pulumi_standin.calls() == []


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_the_shipped_example_stack_files_plan_a_test_stack(cloud):
    if not create.example_file(cloud).is_file():
        pytest.skip(f"{create.example_file(cloud)} does not exist")
    plan = create.plan(cloud, "4h", now=NOW, who="ci")
    assert plan.source == create.example_file(cloud)
    assert plan.config["mlflow-server:expiresAt"] == "202501311200"  # not the file's own
    assert plan.config["mlflow-server:cloud"] == cloud
    assert plan.config["mlflow-server:httpsAllowedCidrs"]
