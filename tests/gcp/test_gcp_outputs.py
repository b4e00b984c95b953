"""The stack outputs: exactly the contract, secrets secret, a URI that survives any password."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from gcp_harness import DB_PRIVATE_IP, NASTY_PASSWORD, STATIC_IP, run_program, stack_config
from sqlalchemy.engine import make_url

from stacks import contract
from stacks.gcp.database import SAFE_SPECIAL_CHARS, backend_store_uri

pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "stack-output-gcp.json"


@pytest.fixture(scope="module")
def dev():
    return run_program(stack_config("dev"))


def test_outputs_are_exactly_the_contract(dev):
    assert sorted(dev.outputs) == sorted(contract.expected_outputs("gcp"))


def test_secret_outputs_are_secret_and_others_are_not(dev):
    assert {name for name, secret in dev.secret.items() if secret} == contract.SECRET_OUTPUTS


def test_backend_store_uri_survives_a_password_of_reserved_characters(dev):
    uri = dev.outputs[contract.BACKEND_STORE_URI]
    assert set("@:/?#%&=+ ") <= set(NASTY_PASSWORD)
    parts = urlsplit(uri)
    assert parts.scheme == "postgresql+psycopg2"
    assert (parts.username, unquote(parts.password)) == ("mlflow", NASTY_PASSWORD)
    assert (parts.hostname, parts.port, parts.path) == (DB_PRIVATE_IP, 5432, "/mlflow")
    assert parse_qs(parts.query) == {"sslmode": ["require"]}
    assert not parts.fragment
    url = make_url(uri)
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg2",
        "mlflow",
        NASTY_PASSWORD,
    )
    assert (url.host, url.port, url.database, dict(url.query)) == (
        DB_PRIVATE_IP,
        5432,
        "mlflow",
        {"sslmode": "require"},
    )


def test_generated_passwords_need_no_quoting_anywhere():
    # The real generator only uses URL-unreserved specials, so env and ini files on the VM
    # can hold the password verbatim; the URI is still quoted for any password.
    assert (
        backend_store_uri("a" + SAFE_SPECIAL_CHARS, "h")
        == f"postgresql+psycopg2://mlflow:a{SAFE_SPECIAL_CHARS}@h:5432/mlflow?sslmode=require"
    )


def test_outputs_without_domain(dev):
    outputs = dev.outputs
    assert outputs[contract.CLOUD] == "gcp"
    assert outputs[contract.HOST] == STATIC_IP
    assert outputs[contract.TRACKING_URL] == f"https://{STATIC_IP}"
    assert outputs[contract.SSH_USER] == "mlflow-admin"
    assert outputs[contract.ENVIRONMENT] == "dev"
    assert (
        outputs[contract.ARTIFACTS_DESTINATION]
        == "gs://mlflow-artifacts-bucket-a1b2c3d/mlflow-artifacts"
    )
    assert (
        outputs[contract.DB_CONNECTION_NAME]
        == "my-project-123:europe-west1:mlflow-db-instance-a1b2c3d"
    )
    assert outputs[contract.ADMIN_PASSWORD] == NASTY_PASSWORD


def test_domain_becomes_host_and_url():
    run = run_program(stack_config("prod", domain="mlflow.example.com", sshUser="ops"))
    assert run.outputs[contract.HOST] == "mlflow.example.com"
    assert run.outputs[contract.TRACKING_URL] == "https://mlflow.example.com"
    assert run.outputs[contract.SSH_USER] == "ops"
    assert run.outputs[contract.ENVIRONMENT] == "prod"


def test_recorded_stack_output_matches_what_the_program_exports(dev):
    recorded = json.loads(FIXTURE.read_text())
    assert sorted(recorded) == sorted(dev.outputs)
    assert recorded[contract.CLOUD] == "gcp"
    assert recorded[contract.ENVIRONMENT] in contract.ENVIRONMENTS
    assert recorded[contract.TRACKING_URL] == f"https://{recorded[contract.HOST]}"
    assert re.fullmatch(
        r"gs://[a-z0-9][a-z0-9._-]+/mlflow-artifacts", recorded[contract.ARTIFACTS_DESTINATION]
    )
    assert re.fullmatch(
        r"[a-z][a-z0-9-]+:[a-z]+-[a-z]+\d:[a-z0-9-]+", recorded[contract.DB_CONNECTION_NAME]
    )
    assert re.fullmatch(
        rf"[A-Za-z0-9{re.escape(SAFE_SPECIAL_CHARS)}]{{32}}", recorded[contract.ADMIN_PASSWORD]
    )
    url = make_url(recorded[contract.BACKEND_STORE_URI])
    assert (url.drivername, url.username, url.port, url.database) == (
        "postgresql+psycopg2",
        "mlflow",
        5432,
        "mlflow",
    )
    assert dict(url.query) == {"sslmode": "require"}
