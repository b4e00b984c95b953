"""Stack outputs: the shared contract, secrets kept secret, a URI that survives any password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_harness import DB_ADDRESS, ELASTIC_IP, RecordingMocks, config, run_stack
from sqlalchemy.engine import make_url

from stacks import contract
from stacks.aws.database import backend_store_uri

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

# Pulumi's wire envelope for a secret value (sdk/python/lib/pulumi/runtime/rpc.py).
SECRET_SIG, SECRET_MARKER = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"
HOSTILE_PASSWORD = "p@ss:w/rd?#%41 x&y=z+"


@pytest.fixture(scope="module")
def hostile():
    mocks = RecordingMocks(passwords={"database-password": HOSTILE_PASSWORD})
    return run_stack(config(), mocks=mocks)


def test_outputs_are_exactly_the_contract_for_aws(hostile):
    assert tuple(hostile.outputs) == contract.expected_outputs("aws")
    assert set(hostile.outputs) == set(
        contract.COMMON_OUTPUTS + contract.ACCESS_OUTPUTS + contract.SERVER_OUTPUTS
    )


@pytest.mark.parametrize("name", contract.expected_outputs("aws"))
def test_secret_outputs_and_only_those_are_secret(hostile, name):
    assert hostile.secret[name] is (name in contract.SECRET_OUTPUTS)


def test_plain_outputs_have_the_contract_values(hostile):
    out = hostile.outputs
    assert out[contract.CLOUD] == "aws"
    assert out[contract.HOST] == ELASTIC_IP
    assert out[contract.TRACKING_URL] == f"https://{ELASTIC_IP}"
    assert out[contract.SSH_USER] == "mlflow-admin"
    assert out[contract.ARTIFACTS_DESTINATION] == "s3://artifacts-bucket-0a1b2c3/mlflow-artifacts"
    assert out[contract.ENVIRONMENT] == "dev"


def test_backend_store_uri_survives_a_password_full_of_url_delimiters(hostile):
    url = make_url(hostile.outputs[contract.BACKEND_STORE_URI])
    assert url.drivername == "postgresql+psycopg2"
    assert url.username == "mlflow"
    assert url.password == HOSTILE_PASSWORD
    assert (url.host, url.port, url.database) == (DB_ADDRESS, 5432, "mlflow")
    assert dict(url.query) == {"sslmode": "require"}


def test_database_password_is_random_and_fed_to_rds(hostile):
    password = hostile.mocks.one("aws:rds/instance:Instance").inputs["password"]
    # It reaches RDS as a secret: Pulumi's secret envelope around the value.
    assert password == {SECRET_SIG: SECRET_MARKER, "value": HOSTILE_PASSWORD}
    spec = [
        r.inputs
        for r in hostile.mocks.of_type("random:index/randomPassword:RandomPassword")
        if r.name == "database-password"
    ][0]
    # RDS refuses these characters in master passwords.
    assert not set(spec["overrideSpecial"]) & set('/@" ')
    assert spec["length"] >= 24


def test_admin_password_is_a_long_random_secret(hostile):
    (spec,) = [
        r.inputs
        for r in hostile.mocks.of_type("random:index/randomPassword:RandomPassword")
        if r.name == "admin-password"
    ]
    assert spec["length"] >= 24
    assert hostile.outputs[contract.ADMIN_PASSWORD] == "x" * int(spec["length"])
    assert hostile.outputs[contract.ADMIN_PASSWORD] != hostile.outputs[contract.BACKEND_STORE_URI]


def test_components_follow_the_house_shape(hostile):
    components = {r.name: r.typ for r in hostile.mocks.resources if not r.custom}
    assert components == {
        "network": "mlflow-server:aws:Network",
        "security": "mlflow-server:aws:Security",
        "database": "mlflow-server:aws:Database",
        "artifacts": "mlflow-server:aws:ArtifactBucket",
        "identity": "mlflow-server:aws:Identity",
        "vm": "mlflow-server:aws:Vm",
    }
    top_level = {"aws", "admin-password"}
    for resource in hostile.mocks.aws_resources():
        if resource.name not in top_level:
            assert resource.name.split("-")[0] in components, resource.name


def test_recorded_stack_output_document_matches_the_contract():
    path = Path(__file__).resolve().parents[1] / "fixtures" / "stack-output-aws.json"
    recorded = json.loads(path.read_text())
    assert sorted(recorded) == sorted(contract.expected_outputs("aws"))
    assert recorded[contract.CLOUD] == "aws"
    assert recorded[contract.ARTIFACTS_DESTINATION].startswith("s3://")
    assert recorded[contract.ARTIFACTS_DESTINATION].endswith("/mlflow-artifacts")
    url = make_url(recorded[contract.BACKEND_STORE_URI])
    # The recorded URI is what backend_store_uri() makes of its decoded password.
    assert backend_store_uri(url.password, url.host) == recorded[contract.BACKEND_STORE_URI]
    assert len(recorded[contract.ADMIN_PASSWORD]) >= 24
