"""Every resource that can carry labels/tags carries the kit's, so the leftover check is complete.

Each cloud's program (stacks.program.main) runs as a test stack under the
recording mocks the stack tests use (tests/stacks/stack_harness.py, so the mocks
stay in step with the programs). Nothing here lists resource types: every registered custom resource
is resolved to its SDK class, and if the class's constructor takes ``labels``
or ``tags``, the resource must end up with the stack, environment and expiry
labels, either in its own inputs or through its provider's
``default_labels`` / ``default_tags``. A GCP resource whose class takes a
``description`` but no ``labels`` must carry the stack marker
(``contract.DESCRIPTION_MARKER``) in its description instead.
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from pathlib import Path

import pytest

from stacks import contract
from stacks.naming import stack_label as label_value
from tests.stacks import stack_harness

pytestmark = pytest.mark.unit
TESTS = Path(__file__).resolve().parent.parent
STACKS = TESTS.parent / "stacks"
STACK = "test-ci-42"
LABEL_PARAMS = ("labels", "tags")
#: Types whose labels live in a nested block rather than a top-level argument; the
#: top-level rule cannot see them, so they are checked where they are.
NESTED_LABELS = {"gcp:sql/databaseInstance:DatabaseInstance": ("settings", "userLabels")}
PACKAGES = {
    "gcp": "pulumi_gcp",
    "aws": "pulumi_aws",
    "random": "pulumi_random",
    "tls": "pulumi_tls",
}


def run_cloud(cloud: str):
    config = stack_harness.config(cloud, "test")
    return stack_harness.declared_stack(cloud, config, stack=STACK).resources, config


def run_gcp():
    return run_cloud("gcp")


# Loading an SDK submodule warns once for every deprecated class it defines, used or
# not; load the ones the programs use quietly, as tests/gcp and tests/aws do.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for _package, _modules in (
        ("pulumi_gcp", ("compute", "sql", "storage", "serviceaccount", "projects")),
        ("pulumi_aws", ("ec2", "iam", "rds", "s3", "vpc")),
    ):
        for _module in _modules:
            # attribute access is what loads a lazy SDK module's class files
            getattr(importlib.import_module(f"{_package}.{_module}"), "__all__", None)


def resource_class(typ: str) -> type:
    """The SDK class behind a type token, e.g. ``aws:ec2/instance:Instance``."""
    if typ.startswith("pulumi:providers:"):
        return importlib.import_module(PACKAGES[typ.rsplit(":", 1)[1]]).Provider
    package, module_path, name = typ.split(":")
    root = PACKAGES[package]  # a KeyError here names a package this test must learn
    sub = module_path.split("/")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(root if sub == "index" else f"{root}.{sub}")
        return getattr(module, name)


def label_param(cls: type) -> str | None:
    """``labels`` or ``tags`` when the resource's constructor accepts it."""
    parameters = inspect.signature(cls._internal_init).parameters
    return next((name for name in LABEL_PARAMS if name in parameters), None)


def marks_description(cls: type) -> bool:
    """True when the constructor takes a description but no labels: the marker goes there."""
    parameters = inspect.signature(cls._internal_init).parameters
    return "description" in parameters and label_param(cls) is None


def as_dict(value) -> dict:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def provider_defaults(resources) -> dict[str, dict[str, str]]:
    """Provider name -> the labels/tags it adds to every resource it manages."""
    defaults = {}
    for resource in resources:
        if resource.typ.startswith("pulumi:providers:"):
            inputs = resource.inputs
            labels = as_dict(inputs.get("defaultLabels"))
            labels.update(as_dict(as_dict(inputs.get("defaultTags")).get("tags")))
            defaults[resource.name] = labels
    return defaults


def effective_labels(resource, param: str, defaults) -> dict[str, str]:
    labels = as_dict(resource.inputs.get(param))
    if resource.provider:  # "<provider urn>::<provider id>"; the urn ends with its name
        name = resource.provider.split("::")[-2]
        labels = {**defaults.get(name, {}), **labels}
    return labels


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_every_labellable_resource_carries_the_kits_labels(cloud):
    if not (STACKS / cloud / "deploy.py").exists():
        pytest.skip(f"stacks/{cloud}/deploy.py does not exist yet: no {cloud} program to check")
    resources, config = run_cloud(cloud)
    expected = {
        contract.LABEL_STACK: label_value(STACK),
        contract.LABEL_ENVIRONMENT: "test",
        contract.LABEL_EXPIRES: config["mlflow-server:expiresAt"],
    }
    defaults = provider_defaults(resources)
    checked, missing = set(), []
    for resource in resources:
        if not resource.custom or resource.typ.startswith("pulumi:providers:"):
            continue
        if resource.typ in NESTED_LABELS:
            block, field = NESTED_LABELS[resource.typ]
            labels = as_dict(as_dict(resource.inputs.get(block)).get(field))
        else:
            param = label_param(resource_class(resource.typ))
            if param is None:
                continue
            labels = effective_labels(resource, param, defaults)
        checked.add(resource.typ)
        wrong = {k: labels.get(k) for k, v in expected.items() if labels.get(k) != v}
        if wrong:
            missing.append(f"{resource.typ} {resource.name}: {wrong}")
    assert not missing, "resources without the kit's labels/tags:\n" + "\n".join(missing)
    # The program's core billable resources must be among those checked, or this
    # test has silently stopped seeing them (e.g. a harness that registers nothing).
    core = {
        "gcp": {"gcp:compute/instance:Instance", "gcp:storage/bucket:Bucket"},
        "aws": {"aws:ec2/instance:Instance", "aws:rds/instance:Instance"},
    }[cloud]
    assert core <= checked, f"checked only {sorted(checked)}"


@pytest.mark.parametrize(
    ("typ", "param"),
    [
        ("gcp:compute/instance:Instance", "labels"),
        ("gcp:compute/firewall:Firewall", None),
        ("aws:s3/bucket:Bucket", "tags"),
        ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", None),
        ("random:index/randomPassword:RandomPassword", None),
    ],
)
def test_label_support_is_read_from_the_sdk_classes(typ, param):
    assert label_param(resource_class(typ)) == param


def unmarked(resources, marker: str) -> tuple[set[str], list[str]]:
    """Types that take a description but no labels, and those of them missing ``marker``."""
    checked, missing = set(), []
    for resource in resources:
        if not resource.custom or resource.typ.startswith("pulumi:providers:"):
            continue
        if resource.typ in NESTED_LABELS or not marks_description(resource_class(resource.typ)):
            continue
        checked.add(resource.typ)
        description = resource.inputs.get("description") or ""
        if marker not in description:
            missing.append(f"{resource.typ} {resource.name}: {description!r}")
    return checked, missing


def test_every_gcp_resource_without_labels_marks_the_stack_in_its_description():
    if not (STACKS / "gcp" / "deploy.py").exists():
        pytest.skip("stacks/gcp/deploy.py does not exist yet: no gcp program to check")
    resources, _ = run_gcp()
    marker = contract.DESCRIPTION_MARKER.format(stack=label_value(STACK))
    checked, missing = unmarked(resources, marker)
    assert not missing, f"descriptions without {marker}:\n" + "\n".join(missing)
    # The network and its firewall rules must be among those checked, or this test
    # has silently stopped seeing them.
    assert {"gcp:compute/network:Network", "gcp:compute/firewall:Firewall"} <= checked, (
        f"checked only {sorted(checked)}"
    )


@pytest.mark.parametrize(
    ("typ", "marked"),
    [
        ("gcp:compute/firewall:Firewall", True),
        ("gcp:serviceaccount/account:Account", True),
        ("gcp:compute/instance:Instance", False),  # takes labels
        ("gcp:sql/user:User", False),  # takes neither
    ],
)
def test_description_marking_is_read_from_the_sdk_classes(typ, marked):
    assert marks_description(resource_class(typ)) is marked


def test_a_description_without_the_marker_is_caught():
    class Fake:
        typ, name, custom = "gcp:compute/network:Network", "leaky", True
        inputs = {"description": "MLflow tracking server network [mlflow-kit-stack=other]"}

    marker = contract.DESCRIPTION_MARKER.format(stack="s")
    assert unmarked([Fake], marker) == (
        {Fake.typ},
        [f"{Fake.typ} leaky: {Fake.inputs['description']!r}"],
    )
    Fake.inputs = {"description": f"MLflow tracking server network {marker}"}
    assert unmarked([Fake], marker) == ({Fake.typ}, [])


def test_a_resource_without_labels_is_caught():
    """The check itself: an unlabelled labellable resource fails it."""

    class Fake:
        typ, name, custom, provider = "gcp:storage/bucket:Bucket", "leaky", True, ""
        inputs = {"labels": {"team": "ml"}}

    labels = effective_labels(Fake, label_param(resource_class(Fake.typ)), {})
    assert contract.LABEL_STACK not in labels
    Fake.provider = "urn:pulumi:s::p::pulumi:providers:gcp::mlflow-gcp::mlflow-gcp-id"
    defaults = {"mlflow-gcp": {contract.LABEL_STACK: "s"}}
    assert effective_labels(Fake, "labels", defaults)[contract.LABEL_STACK] == "s"
