"""The kit's stacks obey the Pulumi CLI's config rules (tests/stacks/cli_rules.py).

Every example stack file and every configuration ``fab test-stack`` writes is loaded
as the CLI loads it (Pulumi.yaml's ``stackConfigDir``, the project namespace,
declared defaults and types, values as ``config set`` / ``set-all --json`` store
them), must pass the CLI's validation, and must then run the real program under
mocks with the config the engine hands it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cli_rules
import pytest
import stack_harness
import yaml
from invoke import Context

from provisioning import pulumi_cli, stack_tasks
from stacks import contract, keys

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
ROOT = Path(__file__).resolve().parents[2]
PROJECT = cli_rules.load_project(ROOT / "Pulumi.yaml")
EXAMPLES = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml")
    for p in (ROOT / "stacks").glob("Pulumi.*-*.yaml")
)


def test_the_project_file_is_valid_and_matches_the_key_list():
    assert PROJECT.name == keys.PROJECT and PROJECT.stack_config_dir == "stacks"
    declared = {
        k: (d["type"], d.get("default", cli_rules.Stored)) for k, d in PROJECT.config.items()
    }
    expected = {k: (t, cli_rules.Stored) for k, t in keys.REQUIRED.items()}
    expected.update(keys.DECLARED_DEFAULTS)
    assert declared == expected
    # Optional keys without one default are documented, not declared.
    text = (ROOT / "Pulumi.yaml").read_text()
    for key, typ in keys.UNDECLARED.items():
        assert f"#   {key} ({typ}):" in text
        assert key not in PROJECT.config


def test_there_are_six_examples():
    assert [f"{c}-{e}" for c in ("aws", "gcp") for e in ("dev", "prod", "test")] == EXAMPLES


@pytest.mark.parametrize("stack", EXAMPLES)
def test_example_stack_file_passes_the_cli_and_deploys(stack):
    stored = cli_rules.load_stack_file(PROJECT, stack)
    assert cli_rules.validate(PROJECT, stack, stored) == []
    run = stack_harness.run(cli_rules.program_config(PROJECT, stored), stack=stack)
    assert run.outputs[contract.ENVIRONMENT] == stack.split("-")[1]
    assert run.outputs[contract.CLOUD] == stack.split("-")[0]


# --- each rule, caught -----------------------------------------------------------------


def test_a_missing_key_without_default_is_refused_as_the_cli_words_it():
    stored = cli_rules.load_stack_file(PROJECT, "gcp-dev")
    del stored["mlflow-server:httpsAllowedCidrs"]
    assert cli_rules.validate(PROJECT, "dev", stored) == [
        "Stack 'dev' is missing configuration value 'httpsAllowedCidrs'"
    ]
    del stored["mlflow-server:sshPublicKeys"]
    assert cli_rules.validate(PROJECT, "dev", stored) == [
        "Stack 'dev' is missing configuration values 'httpsAllowedCidrs' and 'sshPublicKeys'"
    ]


@pytest.mark.parametrize(
    ("key", "stored", "typ"),
    [
        ("gcpDbVersion", cli_rules.Stored("sixteen"), "integer"),
        ("awsDbAllowMajorVersionUpgrade", cli_rules.Stored("yes"), "boolean"),
        ("labels", cli_rules.Stored('["team"]', object=True), "object"),
        ("sshAllowedCidrs", cli_rules.Stored("[1, 2]", object=True), "array<string>"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(key, stored, typ):
    config = cli_rules.load_stack_file(PROJECT, "aws-dev")
    config[f"mlflow-server:{key}"] = stored
    assert cli_rules.validate(PROJECT, "dev", config) == [
        f"Stack 'dev' with configuration key '{key}' must be of type '{typ}'"
    ]


def test_a_list_set_as_text_is_refused_and_the_structured_form_accepted():
    config = cli_rules.load_stack_file(PROJECT, "gcp-dev")
    # `pulumi config set mlflow-server:httpsAllowedCidrs '["203.0.113.0/24"]'`
    config.update(
        cli_rules.stored_from_cli(
            ["config", "set", "mlflow-server:httpsAllowedCidrs", '["203.0.113.0/24"]']
        )
    )
    assert cli_rules.validate(PROJECT, "dev", config) == [
        "Stack 'dev' with configuration key 'httpsAllowedCidrs' must be of type 'array<string>'"
    ]
    # `pulumi config set-all --json ...` as provisioning/pulumi_cli.py calls it
    entry = {"value": '["203.0.113.0/24"]', "objectValue": ["203.0.113.0/24"], "secret": False}
    config.update(
        cli_rules.stored_from_cli(
            ["config", "set-all", "--json", json.dumps({"mlflow-server:httpsAllowedCidrs": entry})]
        )
    )
    assert cli_rules.validate(PROJECT, "dev", config) == []


def test_project_file_errors_are_caught(tmp_path):
    bad = {
        "untyped array": {"k": {"type": "array"}},
        "wrong default": {"k": {"type": "integer", "default": "x"}},
        "typed provider key": {"gcp:project": {"type": "string"}},
    }
    for name, config in bad.items():
        path = tmp_path / "Pulumi.yaml"
        path.write_text(yaml.safe_dump({"name": "p", "runtime": "python", "config": config}))
        with pytest.raises(cli_rules.ProjectError):
            cli_rules.load_project(path)
        assert name


# --- what fab test-stack writes ---------------------------------------------------------


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_every_config_fab_test_stack_writes_passes_the_cli(cloud, pulumi_standin):
    extra = [f'sshPublicKeys=["{stack_harness.public_key(comment="ci@example.com")}"]']
    name = f"test-ci-{cloud}"
    stack_tasks.test_stack(Context(), cloud=cloud, ttl="2h", name=name, config=extra)
    stored: dict[str, cli_rules.Stored] = {}
    for call in pulumi_standin.calls():
        if call[:2] in (["config", "set"], ["config", "set-all"]):
            stored.update(cli_rules.stored_from_cli(call))
    assert cli_rules.validate(PROJECT, name, stored) == []
    assert stored["mlflow-server:httpsAllowedCidrs"].object  # a list, stored as one
    expires = datetime.strptime(stored["mlflow-server:expiresAt"].text, "%Y%m%d%H%M")
    assert expires.replace(tzinfo=UTC) > datetime.now(UTC)
    # ...and the stand-in's `up` ran the program on exactly that config.
    outputs = pulumi_standin.stacks()[name]["outputs"]
    assert outputs[contract.ENVIRONMENT] == "test" and outputs[contract.CLOUD] == cloud


def test_the_admin_password_fab_rotate_admin_password_stores_becomes_the_output(pulumi_standin):
    """``fab rotate-admin-password --stack`` stores the new password with
    ``pulumi config set --secret`` (provisioning/pulumi_cli.py, the value on stdin): an
    undeclared key the CLI accepts, which the next ``pulumi up`` exports as the stack's
    secret ``admin_password``."""
    name = "test-ci-rotate"
    stack_tasks.test_stack(Context(), cloud="aws", ttl="2h", name=name, config=[])
    generated = pulumi_standin.stacks()[name]["outputs"][contract.ADMIN_PASSWORD]
    new = "a new admin password, rotated"
    pulumi_cli.config_set_secret(name, "mlflow-server:adminPassword", new)
    stored = pulumi_standin.stacks()[name]["config"]["mlflow-server:adminPassword"]
    assert stored == {"value": new, "secret": True}
    assert new not in " ".join(" ".join(call) for call in pulumi_standin.calls())
    pulumi_cli.up(name)
    after = pulumi_standin.stacks()[name]
    assert after["outputs"][contract.ADMIN_PASSWORD] == new != generated
    assert contract.ADMIN_PASSWORD in after["secret_outputs"]
