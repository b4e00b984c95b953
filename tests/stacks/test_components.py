"""The programs' shape: components named alike on both clouds, keyword-only frozen args and
settings, and the rules both clouds take from one place, each pinned to exact values."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import stacks
from stacks import connection_limits, contract, rules
from stacks.component import Component
from stacks.ingress import Ingress, vm_ingress
from stacks.retention import ArtifactRetention, default_retention

pytestmark = pytest.mark.unit
MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(stacks.__path__, "stacks.")
    if info.name != "stacks.__main__"
]
DATACLASSES = sorted(
    {
        cls
        for module in MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__.startswith("stacks.")
    },
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)
COMPONENTS = {
    cls
    for module in MODULES
    for _, cls in inspect.getmembers(module, inspect.isclass)
    if issubclass(cls, Component) and cls is not Component
}


def test_every_args_and_settings_class_is_keyword_only_and_frozen():
    names = {cls.__name__ for cls in DATACLASSES}
    assert {"NetworkArgs", "ServerArgs", "DatabaseSettings", "GcpSettings"} <= names
    for cls in DATACLASSES:
        assert cls.__dataclass_params__.frozen, cls
        assert all(field.kw_only for field in dataclasses.fields(cls)), cls
        with pytest.raises(TypeError):
            cls("positional")


def test_both_clouds_declare_the_same_components():
    tokens = {cls.TYPE for cls in COMPONENTS}
    assert tokens == {
        f"mlflow-server:{cloud}:{kind}"
        for cloud in ("gcp", "aws")
        for kind in ("Network", "Firewall", "Database", "ArtifactBucket", "Identity", "Server")
        # topology group's, in place of the Server
        + ("ServerGroup", "LoadBalancer")
    }
    for cls in COMPONENTS:
        assert cls.__name__ == cls.TYPE.rsplit(":", 1)[1]
        args = inspect.signature(cls.declare).parameters["args"].annotation
        assert args == f"{cls.__name__}Args", cls


def test_only_the_renamed_aws_components_carry_their_former_type():
    former = {cls.TYPE: cls.FORMER for cls in COMPONENTS if cls.FORMER}
    assert former == {
        "mlflow-server:aws:Firewall": "mlflow-server:aws:Security",
        "mlflow-server:aws:Server": "mlflow-server:aws:Vm",
    }


# (https cidrs, ssh cidrs, tls mode, the plan both clouds build their rules from)
INGRESS = [
    (
        ["203.0.113.0/24"],
        ["35.235.240.0/20"],
        "self-signed",
        [
            Ingress(purpose="https", port=443, sources=("203.0.113.0/24",)),
            Ingress(purpose="ssh", port=22, sources=("35.235.240.0/20",)),
        ],
    ),
    (
        ["203.0.113.0/24", "198.51.100.0/24"],
        [],
        "letsencrypt",
        [
            Ingress(purpose="https", port=443, sources=("203.0.113.0/24", "198.51.100.0/24")),
            Ingress(purpose="http", port=80, sources=("0.0.0.0/0",)),
            Ingress(purpose="ssh", port=22, sources=()),
        ],
    ),
    (
        ["0.0.0.0/0"],
        ["198.51.100.7/32"],
        "provided",
        [
            Ingress(purpose="https", port=443, sources=("0.0.0.0/0",)),
            Ingress(purpose="ssh", port=22, sources=("198.51.100.7/32",)),
        ],
    ),
]


@pytest.mark.parametrize(("https", "ssh", "tls_mode", "plan"), INGRESS)
def test_the_vm_ingress_plan_is_exactly_https_acme_http_and_ssh(https, ssh, tls_mode, plan):
    assert vm_ingress(https_cidrs=https, ssh_cidrs=ssh, tls_mode=tls_mode) == plan


@pytest.mark.parametrize(
    ("environment", "retention"),
    [
        (
            "dev",
            ArtifactRetention(
                versioning=True, noncurrent_days=30, expire_days=0, force_destroy=False
            ),
        ),
        (
            "test",
            ArtifactRetention(
                versioning=False, noncurrent_days=30, expire_days=7, force_destroy=True
            ),
        ),
        (
            "prod",
            ArtifactRetention(
                versioning=True, noncurrent_days=90, expire_days=0, force_destroy=False
            ),
        ),
    ],
)
def test_both_clouds_default_artifact_retention(environment, retention):
    assert default_retention(environment) == retention


def test_the_kits_label_names_are_the_prefix_stacks_may_not_use():
    assert (contract.LABEL_STACK, contract.LABEL_ENVIRONMENT, contract.LABEL_EXPIRES) == (
        "mlflow-kit-stack",
        "mlflow-kit-env",
        "mlflow-kit-expires",
    )
    assert rules.RESERVED_LABEL_PREFIX == "mlflow-kit-"


# --- connection limits (stacks/connection_limits.py cites the clouds' tables) ------------

CLOUD_SQL = [
    ("db-f1-micro", 25),
    ("db-g1-small", 50),
    ("db-custom-1-3840", 100),
    ("db-custom-1-6016", 100),
    ("db-custom-1-6144", 200),
    ("db-custom-2-7424", 200),
    ("db-custom-2-7680", 400),
    ("db-custom-4-15104", 400),
    ("db-custom-4-15360", 500),
    ("db-custom-8-30720", 600),
    ("db-custom-16-61440", 800),
    ("db-custom-32-122880", 1000),
    ("db-perf-optimized-N-2", 500),
    ("db-perf-optimized-N-4", 600),
    ("db-perf-optimized-N-8", 800),
    ("db-perf-optimized-N-16", 1000),
]
RDS = [
    ("db.t4g.micro", 112),
    ("db.t3.micro", 112),
    ("db.t4g.small", 225),
    ("db.t3.medium", 450),
    ("db.t4g.large", 901),
    ("db.m5.large", 901),
    ("db.m7g.xlarge", 1802),
    ("db.r6g.large", 1802),
    ("db.m6i.2xlarge", 3604),
    ("db.r7g.xlarge", 3604),
    ("db.m6i.4xlarge", 5000),
    ("db.r5.24xlarge", 5000),
    ("db.x2g.large", None),
    ("db.t4g.nano", None),
]


@pytest.mark.parametrize(("tier", "limit"), CLOUD_SQL)
def test_cloud_sql_limit_by_tier(tier, limit):
    assert connection_limits.cloud_sql_max_connections(tier) == limit


@pytest.mark.parametrize(("instance_class", "limit"), RDS)
def test_rds_limit_by_class(instance_class, limit):
    assert connection_limits.rds_max_connections(instance_class) == limit


def test_rds_limit_is_the_default_parameter_groups_formula_on_the_class_memory():
    """LEAST({DBInstanceClassMemory/9531392}, 5000), written out here with its literals."""
    gib = {"db.t4g.micro": 1, "db.t4g.small": 2, "db.t3.medium": 4, "db.r6g.xlarge": 32}
    for instance_class, memory in gib.items():
        expected = min(memory * 1024**3 // 9531392, 5000)
        assert connection_limits.rds_max_connections(instance_class) == expected
    assert (connection_limits.RDS_BYTES_PER_CONNECTION, connection_limits.RDS_MAX_CONNECTIONS) == (
        9531392,
        5000,
    )


def test_a_tier_without_a_limit_is_refused():
    with pytest.raises(ValueError, match="db-n1-standard-1"):
        connection_limits.cloud_sql_max_connections("db-n1-standard-1")
