"""The example stack files deploy as written, and every GCP key is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from gcp_harness import run_program

from stacks import contract

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted((ROOT / "stacks").glob("Pulumi.gcp-*.yaml"))


def wire(value) -> str:
    """A stack file value as the Pulumi engine hands it to the program."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def test_there_is_an_example_per_environment():
    assert [f.name for f in STACK_FILES] == [
        f"Pulumi.gcp-{env}.yaml" for env in ("dev", "prod", "test")
    ]


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_example_stack_file_deploys(path):
    config = {key: wire(value) for key, value in yaml.safe_load(path.read_text())["config"].items()}
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    run = run_program(config, stack)
    assert run.outputs[contract.ENVIRONMENT] == stack.removeprefix("gcp-")
    assert run.outputs[contract.CLOUD] == "gcp"


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_key_group_in_an_example_starts_with_a_comment(path):
    lines = path.read_text().splitlines()
    body = lines[lines.index("config:") + 1 :]
    previous = ""
    for line in body:
        if re.match(r"^  [a-z][\w-]*:[\w]+:", line) and not (
            previous.startswith("  #")
            or previous.startswith("  mlflow-server:")
            or previous.startswith("  gcp:")
        ):
            pytest.fail(f"{path.name}: {line.strip()} has no comment")
        if not line.startswith("    "):
            previous = line


def test_every_gcp_key_is_documented_in_the_project_file():
    used = set(
        re.findall(r'"(gcp[A-Z]\w+)"', (ROOT / "stacks" / "gcp" / "settings.py").read_text())
    )
    text = (ROOT / "Pulumi.yaml").read_text()
    # Declared keys, and the optional ones documented in the comment block (not
    # declared: the CLI would then require them in every stack).
    project = set(yaml.safe_load(text)["config"]) | set(
        re.findall(r"^#   (\w+) \((?:string|integer|boolean|array|object)\):", text, re.M)
    )
    documented = {key for key in project if key.startswith("gcp")}
    assert used == documented
    for path in STACK_FILES:
        keys = {
            k.split(":", 1)[1]
            for k in yaml.safe_load(path.read_text())["config"]
            if k.startswith("mlflow-server:gcp")
        }
        assert keys <= documented, path.name
