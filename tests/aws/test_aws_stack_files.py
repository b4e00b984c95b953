"""The example stack files and Pulumi.yaml's AWS keys: valid, documented, in use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from aws_harness import run_stack

from stacks import contract

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted((ROOT / "stacks").glob("Pulumi.aws-*.yaml"))
SETTINGS_SOURCE = (ROOT / "stacks" / "aws" / "settings.py").read_text()


def as_config(values: dict) -> dict[str, str]:
    """Stack-file values as the strings the Pulumi engine hands the program."""

    def text(value) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list | dict):
            return json.dumps(value)
        return str(value)

    return {key: text(value) for key, value in values.items()}


def documented_aws_keys() -> set[str]:
    text = (ROOT / "Pulumi.yaml").read_text()
    declared = set(yaml.safe_load(text)["config"])
    # Optional keys are documented in a comment block: declared, the CLI would require them.
    commented = set(re.findall(r"^#   (\w+) \((?:string|integer|boolean)\):", text, re.MULTILINE))
    return {key for key in declared | commented if key.startswith("aws")}


def test_there_is_an_example_per_environment():
    assert [f.name for f in STACK_FILES] == [
        f"Pulumi.aws-{e}.yaml" for e in ("dev", "prod", "test")
    ]


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_example_stack_file_deploys_under_mocks(path):
    values = yaml.safe_load(path.read_text())["config"]
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    run = run_stack(as_config(values), stack=stack)
    assert run.outputs[contract.ENVIRONMENT] == values["mlflow-server:environment"]
    assert run.outputs[contract.CLOUD] == "aws"


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_example_stack_file_keys_are_documented_and_commented(path):
    lines = path.read_text().splitlines()
    keys = [line.split(":")[1] for line in lines if line.startswith("  mlflow-server:aws")]
    assert set(keys) <= documented_aws_keys()
    # Each key line follows a comment or another key of the same commented group.
    for index, line in enumerate(lines):
        if re.match(r"^  [\w-]+:\w+:", line):
            above = lines[index - 1].strip()
            assert above.startswith(("#", "aws:", "mlflow-server:")), line


def test_documented_aws_keys_are_the_keys_the_settings_read():
    read = set(re.findall(r'"(aws[A-Z]\w+)"', SETTINGS_SOURCE))
    assert documented_aws_keys() == read
