"""The stack outputs, both clouds: exactly the contract, secrets secret, a URI that survives
any password, the database's connection limit; and the components named alike."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import stack_harness
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import make_url
from stack_harness import (
    DB_ADDRESS,
    DB_PRIVATE_IP,
    NASTY_PASSWORD,
    STATIC_IP,
    RecordingMocks,
    config,
)

from stacks import contract
from stacks.passwords import URL_SAFE_SPECIALS
from stacks.postgres import backend_store_uri

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Pulumi's wire envelope for a secret value (sdk/python/lib/pulumi/runtime/rpc.py).
SECRET_SIG, SECRET_MARKER = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"
HOSTILE_PASSWORD = "p@ss:w/rd?#%41 x&y=z+"
TEAM = {"labels": {"team": "ml-platform"}}
#: Per cloud: the database password's name and the generator answer, the database host.
DATABASE = {
    "gcp": ("mlflow-db-password", NASTY_PASSWORD, DB_PRIVATE_IP),
    "aws": ("database-password", HOSTILE_PASSWORD, DB_ADDRESS),
}


@pytest.fixture(scope="module", params=["gcp", "aws"])
def hostile(request):
    """A dev stack whose database password holds every character a URI must escape."""
    cloud = request.param
    name, password, _ = DATABASE[cloud]
    mocks = RecordingMocks(passwords={name: password}, default_password=NASTY_PASSWORD)
    return cloud, stack_harness.run(config(cloud, **(TEAM if cloud == "aws" else {})), mocks=mocks)


def test_outputs_are_exactly_the_contract_in_its_order(hostile):
    cloud, run = hostile
    assert tuple(run.outputs) == contract.expected_outputs(cloud)
    assert set(run.outputs) == set(
        contract.COMMON_OUTPUTS
        + contract.ACCESS_OUTPUTS
        + contract.SERVER_OUTPUTS
        + contract.DATABASE_OUTPUTS
        + contract.CLOUD_OUTPUTS[cloud]
    )


def test_secret_outputs_and_only_those_are_secret(hostile):
    _, run = hostile
    assert {name for name, secret in run.secret.items() if secret} == contract.SECRET_OUTPUTS
    assert set(run.secret) == set(run.outputs)


def test_backend_store_uri_survives_a_password_of_reserved_characters(hostile):
    cloud, run = hostile
    _, password, host = DATABASE[cloud]
    uri = run.outputs[contract.BACKEND_STORE_URI]
    assert set("@:/?#%&=+ ") <= set(password)
    parts = urlsplit(uri)
    assert parts.scheme == "postgresql+psycopg2"
    assert (parts.username, unquote(parts.password)) == ("mlflow", password)
    assert (parts.hostname, parts.port, parts.path) == (host.lower(), 5432, "/mlflow")
    assert parse_qs(parts.query) == {"sslmode": ["require"]}
    assert not parts.fragment
    url = make_url(uri)
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg2",
        "mlflow",
        password,
    )
    assert (url.host, url.port, url.database, dict(url.query)) == (
        host,
        5432,
        "mlflow",
        {"sslmode": "require"},
    )
    assert uri == backend_store_uri(password, host)


def test_database_password_reaches_the_database_as_a_secret(hostile):
    cloud, run = hostile
    name, password, _ = DATABASE[cloud]
    user = run.one("gcp:sql/user:User" if cloud == "gcp" else "aws:rds/instance:Instance")
    assert user.inputs["password"] == {SECRET_SIG: SECRET_MARKER, "value": password}
    spec = run.named(name).inputs
    if cloud == "aws":
        # RDS refuses these characters in master passwords.
        assert not set(spec["overrideSpecial"]) & set('/@" ')
    assert spec["length"] >= 24


def test_generated_passwords_need_no_quoting_anywhere():
    # The GCP generator only uses URL-unreserved specials, so env and ini files on the VM
    # can hold the password verbatim; the URI is still quoted for any password.
    assert (
        backend_store_uri("a" + URL_SAFE_SPECIALS, "h")
        == f"postgresql+psycopg2://mlflow:a{URL_SAFE_SPECIALS}@h:5432/mlflow?sslmode=require"
    )


PLAIN = {
    "gcp": {
        contract.CLOUD: "gcp",
        contract.HOST: STATIC_IP,
        contract.TRACKING_URL: f"https://{STATIC_IP}",
        contract.SSH_USER: "mlflow-admin",
        contract.ENVIRONMENT: "dev",
        contract.ARTIFACTS_DESTINATION: "gs://mlflow-artifacts-bucket-a1b2c3d/mlflow-artifacts",
        contract.DB_CONNECTION_NAME: "my-project-123:europe-west1:mlflow-db-instance-a1b2c3d",
        contract.ADMIN_PASSWORD: NASTY_PASSWORD,
        contract.DB_MAX_CONNECTIONS: 50,
        contract.DB_INSTANCE_ID: "mlflow-db-instance-a1b2c3d",
    },
    "aws": {
        contract.CLOUD: "aws",
        contract.HOST: STATIC_IP,
        contract.TRACKING_URL: f"https://{STATIC_IP}",
        contract.SSH_USER: "mlflow-admin",
        contract.ENVIRONMENT: "dev",
        contract.ARTIFACTS_DESTINATION: "s3://artifacts-bucket-0a1b2c3/mlflow-artifacts",
        contract.ADMIN_PASSWORD: NASTY_PASSWORD,
        contract.DB_MAX_CONNECTIONS: 112,
        contract.DB_INSTANCE_ID: "database-instance-abc1234",
        contract.DB_CA_URL: (
            "https://truststore.pki.rds.amazonaws.com/eu-central-1/eu-central-1-bundle.pem"
        ),
    },
}


def test_plain_outputs_have_the_contract_values(hostile):
    cloud, run = hostile
    assert {name: run.outputs[name] for name in PLAIN[cloud]} == PLAIN[cloud]
    assert run.outputs[contract.ADMIN_PASSWORD] != run.outputs[contract.BACKEND_STORE_URI]


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_domain_becomes_host_and_url(cloud):
    run = stack_harness.run(config(cloud, "prod", domain="mlflow.example.com", sshUser="ops"))
    assert run.outputs[contract.HOST] == "mlflow.example.com"
    assert run.outputs[contract.TRACKING_URL] == "https://mlflow.example.com"
    assert run.outputs[contract.SSH_USER] == "ops"
    assert run.outputs[contract.ENVIRONMENT] == "prod"


# --- the database's connection limit -------------------------------------------------------

# (cloud, environment, overrides, the limit the cloud derives)
CONNECTION_LIMITS = [
    ("gcp", "dev", {}, 50),
    ("gcp", "test", {}, 50),
    ("gcp", "prod", {}, 400),
    ("gcp", "dev", {"gcpDbTier": "db-f1-micro"}, 25),
    ("gcp", "dev", {"gcpDbTier": "db-custom-1-3840"}, 100),
    ("gcp", "dev", {"gcpDbTier": "db-custom-2-7424"}, 200),
    ("gcp", "dev", {"gcpDbTier": "db-custom-4-15360"}, 500),
    ("gcp", "dev", {"gcpDbTier": "db-perf-optimized-N-2"}, 500),
    ("gcp", "dev", {"gcpDbTier": "db-perf-optimized-N-16"}, 1000),
    ("aws", "dev", {}, 112),
    ("aws", "test", {}, 112),
    ("aws", "prod", {}, 225),
    ("aws", "dev", {"awsDbInstanceClass": "db.t3.medium"}, 450),
    ("aws", "dev", {"awsDbInstanceClass": "db.r6g.large"}, 1802),
    ("aws", "dev", {"awsDbInstanceClass": "db.m6i.4xlarge"}, 5000),
    ("aws", "dev", {"awsDbInstanceClass": "db.x2g.large"}, 0),
]


@pytest.mark.parametrize(("cloud", "environment", "overrides", "limit"), CONNECTION_LIMITS)
def test_db_max_connections_is_the_clouds_default_for_the_size(
    cloud, environment, overrides, limit
):
    run = stack_harness.run(config(cloud, environment, **overrides))
    value = run.outputs[contract.DB_MAX_CONNECTIONS]
    assert (value, type(value)) == (limit, int)
    assert run.secret[contract.DB_MAX_CONNECTIONS] is False


# --- components ----------------------------------------------------------------------------

#: Both clouds: the same component types, under each stack's own component names.
COMPONENTS = ("Network", "Firewall", "Database", "ArtifactBucket", "Identity", "Server")
NAMES = {
    "gcp": ("mlflow-network", "mlflow-firewall", "mlflow-db", "mlflow-artifacts")
    + ("mlflow-identity", "mlflow-vm"),
    "aws": ("network", "security", "database", "artifacts", "identity", "vm"),
}
PROVIDER = {"gcp": "mlflow-gcp", "aws": "aws"}


def test_components_are_named_alike_and_every_resource_belongs_to_one(hostile):
    cloud, run = hostile
    components = {r.name: r.typ for r in run.resources if not r.custom}
    assert components == {
        name: f"mlflow-server:{cloud}:{typ}"
        for name, typ in zip(NAMES[cloud], COMPONENTS, strict=True)
    }
    top_level = [
        r.name
        for r in run.monitor.registrations
        if r.parent.split("::")[2] == stack_harness.ROOT_STACK_TYPE
    ]
    assert sorted(top_level) == sorted((PROVIDER[cloud], *NAMES[cloud]))
    for resource in run.customs():
        if resource.name != PROVIDER[cloud]:
            assert any(resource.name.startswith(f"{name}-") for name in components), resource.name


def test_the_admin_password_is_the_servers_on_both_clouds(hostile):
    cloud, run = hostile
    server = NAMES[cloud][-1]
    (password,) = [
        r
        for r in run.monitor.registrations
        if r.typ == "random:index/randomPassword:RandomPassword" and "admin" in r.name
    ]
    assert password.name == f"{server}-admin-password"
    assert password.parent.endswith(f"::mlflow-server:{cloud}:Server::{server}")
    assert run.named(password.name).inputs["length"] >= 24
    assert run.outputs[contract.ADMIN_PASSWORD] == NASTY_PASSWORD


# --- recorded outputs ----------------------------------------------------------------------


def test_recorded_gcp_output_matches_what_the_program_exports():
    recorded = json.loads((FIXTURES / "stack-output-gcp.json").read_text())
    run = stack_harness.run(config("gcp"))
    assert sorted(recorded) == sorted(run.outputs)
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
        rf"[A-Za-z0-9{re.escape(URL_SAFE_SPECIALS)}]{{32}}", recorded[contract.ADMIN_PASSWORD]
    )
    url = make_url(recorded[contract.BACKEND_STORE_URI])
    assert (url.drivername, url.username, url.port, url.database) == (
        "postgresql+psycopg2",
        "mlflow",
        5432,
        "mlflow",
    )
    assert dict(url.query) == {"sslmode": "require"}
    assert recorded[contract.DB_MAX_CONNECTIONS] == run.outputs[contract.DB_MAX_CONNECTIONS]
    # The Cloud SQL instance the connection name names, and the CA that signed its
    # server certificate.
    assert recorded[contract.DB_CONNECTION_NAME].endswith(":" + recorded[contract.DB_INSTANCE_ID])
    (ca,) = x509.load_pem_x509_certificates(recorded[contract.DB_CA_PEM].encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert_ed25519_public_key(recorded[contract.SSH_HOST_KEY])


def assert_ed25519_public_key(line: str) -> None:
    """An OpenSSH public key line of a real ED25519 key, without a comment."""
    assert line.startswith("ssh-ed25519 ") and len(line.split()) == 2
    assert isinstance(serialization.load_ssh_public_key(line.encode()), ed25519.Ed25519PublicKey)


def test_recorded_aws_output_document_matches_the_contract():
    recorded = json.loads((FIXTURES / "stack-output-aws.json").read_text())
    assert sorted(recorded) == sorted(contract.expected_outputs("aws"))
    assert recorded[contract.CLOUD] == "aws"
    assert recorded[contract.ARTIFACTS_DESTINATION].startswith("s3://")
    assert recorded[contract.ARTIFACTS_DESTINATION].endswith("/mlflow-artifacts")
    url = make_url(recorded[contract.BACKEND_STORE_URI])
    # The recorded URI is what backend_store_uri() makes of its decoded password.
    assert backend_store_uri(url.password, url.host) == recorded[contract.BACKEND_STORE_URI]
    assert len(recorded[contract.ADMIN_PASSWORD]) >= 24
    assert recorded[contract.DB_MAX_CONNECTIONS] == 112
    # The RDS instance the URI's endpoint names, and its region's CA bundle.
    assert url.host.startswith(recorded[contract.DB_INSTANCE_ID] + ".")
    region = recorded[contract.REGION]
    assert recorded[contract.DB_CA_URL] == (
        f"https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"
    )
    assert_ed25519_public_key(recorded[contract.SSH_HOST_KEY])
