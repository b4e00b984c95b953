"""The example stack files deploy as written, both clouds, and every cloud key is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import stack_harness
import yaml

from stacks import contract

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
ROOT = Path(__file__).resolve().parents[2]
CLOUDS = ("gcp", "aws")
STACK_FILES = {cloud: sorted((ROOT / "stacks").glob(f"Pulumi.{cloud}-*.yaml")) for cloud in CLOUDS}
EXAMPLES = [(cloud, path) for cloud in CLOUDS for path in STACK_FILES[cloud]]
EXAMPLE_IDS = [path.name for _, path in EXAMPLES]


def wire(value) -> str:
    """A stack file value as the Pulumi engine hands it to the program."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def documented_keys(cloud: str) -> set[str]:
    """Declared keys, and the optional ones documented in the comment block (not
    declared: the CLI would then require them in every stack)."""
    text = (ROOT / "Pulumi.yaml").read_text()
    project = set(yaml.safe_load(text)["config"]) | set(
        re.findall(r"^#   (\w+) \((?:string|integer|boolean|array|object)\):", text, re.M)
    )
    return {key for key in project if key.startswith(cloud)}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_there_is_an_example_per_environment(cloud):
    assert [f.name for f in STACK_FILES[cloud]] == [
        f"Pulumi.{cloud}-{env}.yaml" for env in ("dev", "prod", "test")
    ]


@pytest.mark.parametrize(("cloud", "path"), EXAMPLES, ids=EXAMPLE_IDS)
def test_example_stack_file_deploys(cloud, path):
    values = yaml.safe_load(path.read_text())["config"]
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    run = stack_harness.run({key: wire(value) for key, value in values.items()}, stack)
    assert run.outputs[contract.ENVIRONMENT] == stack.removeprefix(f"{cloud}-")
    assert run.outputs[contract.ENVIRONMENT] == values["mlflow-server:environment"]
    assert run.outputs[contract.CLOUD] == cloud


@pytest.mark.parametrize(("cloud", "path"), EXAMPLES, ids=EXAMPLE_IDS)
def test_every_key_group_in_an_example_starts_with_a_comment(cloud, path):
    lines = path.read_text().splitlines()
    body = lines[lines.index("config:") + 1 :]
    previous = ""
    for line in body:
        if re.match(r"^  [a-z][\w-]*:[\w]+:", line) and not (
            previous.startswith(("  #", "  mlflow-server:", f"  {cloud}:"))
        ):
            pytest.fail(f"{path.name}: {line.strip()} has no comment")
        if not line.startswith("    "):
            previous = line
    # Each key line follows a comment or another key of the same commented group.
    for index, line in enumerate(lines):
        if re.match(r"^  [\w-]+:\w+:", line):
            above = lines[index - 1].strip()
            assert above.startswith(("#", f"{cloud}:", "mlflow-server:")), line


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_cloud_key_the_settings_read_is_documented_and_no_other(cloud):
    source = (ROOT / "stacks" / cloud / "settings.py").read_text()
    assert set(re.findall(rf'"({cloud}[A-Z]\w+)"', source)) == documented_keys(cloud)
    for path in STACK_FILES[cloud]:
        keys = {
            key.split(":", 1)[1]
            for key in yaml.safe_load(path.read_text())["config"]
            if key.startswith(f"mlflow-server:{cloud}")
        }
        assert keys <= documented_keys(cloud), path.name
