"""Deployment settings: validation names the key, secrets never show, both sources agree."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pytest
import yaml
from sqlalchemy.engine import make_url

from provisioning import lock as lock_module
from provisioning import settings as settings_module
from provisioning import sizing as sizing_module
from provisioning.layout import PATHS
from provisioning.settings import (
    REDACTED,
    SETTINGS_KEYS,
    Deployment,
    Secret,
    SettingsError,
    deployment_from_file,
    deployment_from_outputs,
    rules,
)
from stacks import contract
from tests.unit.conftest import (
    ADMIN_PASSWORD,
    NASTY_PASSWORD,
    NASTY_PASSWORD_ENCODED,
    NASTY_URI,
    valid_settings,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

#: Recorded `pulumi stack output --json --show-secrets` documents, one per cloud,
#: with the shapes the stacks export (the GCP one adds db_connection_name).
RECORDED_OUTPUTS = {
    "gcp": {
        "admin_password": ADMIN_PASSWORD,
        "artifacts_destination": "gs://my-project-123-mlflow-dev/artifacts",
        "backend_store_uri": NASTY_URI,
        "cloud": "gcp",
        "db_connection_name": "my-project-123:europe-west1:mlflow-dev-db",
        "environment": "dev",
        "host": "203.0.113.10",
        "ssh_user": "mlflow-admin",
        "tracking_url": "https://203.0.113.10",
    },
    "aws": {
        "admin_password": ADMIN_PASSWORD,
        "artifacts_destination": "s3://mlflow-prod-artifacts-8f3a/mlflow",
        "backend_store_uri": (
            f"postgresql+psycopg2://mlflow:{NASTY_PASSWORD_ENCODED}"
            "@mlflow-prod.abc123.eu-west-1.rds.amazonaws.com:5432/mlflow"
        ),
        "cloud": "aws",
        "environment": "prod",
        "host": "ec2-198-51-100-7.eu-west-1.compute.amazonaws.com",
        "ssh_user": "admin",
        "tracking_url": "https://ec2-198-51-100-7.eu-west-1.compute.amazonaws.com",
    },
}


def _secrets_in(deployment: Deployment) -> list[str]:
    return [
        deployment.backend_store_uri.reveal(),
        NASTY_PASSWORD_ENCODED,
        deployment.admin_password.reveal(),
        *(v.reveal() for v in deployment.storage_secret_env.values()),
    ]


# --------------------------------------------------------------------------- Secret


def test_secret_hides_its_value_everywhere_but_reveal():
    secret = Secret("hunter2-hunter2")
    printf_style = "%s" % (secret,)  # noqa: UP031 - logging formats this way
    for shown in (repr(secret), str(secret), f"{secret}", printf_style, repr([secret])):
        assert "hunter2" not in shown
    assert repr(secret) == "Secret('*****')"
    assert secret.reveal() == "hunter2-hunter2"
    assert secret == Secret("hunter2-hunter2")
    assert secret != Secret("other")
    assert secret != "hunter2-hunter2"  # a Secret is not its plain value


def test_deployment_repr_and_redacted_show_no_secret():
    deployment = Deployment(
        **valid_settings(
            storage_secret_env={"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG"},
            flask_secret_key="flask-secret-key-0123456789",
        )
    )
    shown = repr(deployment) + str(deployment) + json.dumps(deployment.redacted())
    for secret in [*_secrets_in(deployment), "flask-secret-key-0123456789", "wJalrXUtnFEMI"]:
        assert secret not in shown
    redacted = deployment.redacted()
    assert redacted["backend_store_uri"] == REDACTED
    assert redacted["admin_password"] == REDACTED
    assert redacted["flask_secret_key"] == REDACTED
    assert redacted["storage_secret_env"] == {"AWS_SECRET_ACCESS_KEY": REDACTED}
    assert redacted["host"] == "203.0.113.10"
    assert set(redacted) == set(SETTINGS_KEYS)


def test_defaults():
    deployment = Deployment(**valid_settings())
    assert deployment.public_host == "203.0.113.10"
    assert deployment.tracking_url == "https://203.0.113.10"
    assert deployment.ssh_port == 22
    assert deployment.admin_username == "admin"
    assert deployment.artifact_mode == "proxied"
    assert deployment.tls_mode == "self-signed"
    assert deployment.mlflow_version == "3.17.2"
    assert deployment.miniforge_url.startswith("https://github.com/conda-forge/miniforge/")
    assert deployment.server_instances is None
    assert deployment.flask_secret_key is None
    assert isinstance(deployment.backend_store_uri, Secret)
    assert deployment.notes == ()
    assert (deployment.database_backup, deployment.db_instance, deployment.db_location) == (
        "auto", None, None)  # fmt: skip
    assert (deployment.gc_enabled, deployment.gc_older_than, deployment.gc_schedule) == (
        True, "30d", "daily")  # fmt: skip
    assert deployment.metrics_allowed_cidrs == ()


@pytest.mark.parametrize(
    "path", ["/var/lib/mlflow/tmp/big", "/srv/mlflow-tmp", "/mnt/scratch", "/data/mlflow/tmp",
             "/data/t"],
)  # fmt: skip
def test_server_tmp_dir_is_accepted_as_written(path):
    deployment = Deployment(**valid_settings(server_tmp_dir=path, server_tmp_min_free_gib=100))
    assert (deployment.server_tmp_dir, deployment.server_tmp_min_free_gib) == (path, 100)


def test_server_tmp_dir_defaults_to_the_vm_s_disk_where_the_servers_may_write():
    deployment = Deployment(**valid_settings())
    assert (deployment.server_tmp_dir, deployment.server_tmp_min_free_gib) == (
        "/var/lib/mlflow/tmp", 8)  # fmt: skip
    # Inside the one directory the hardened units may write, outside PrivateTmp='s copies.
    assert PurePosixPath(deployment.server_tmp_dir).is_relative_to(PATHS["state_dir"])


def test_server_tmp_roots_hold_none_of_the_kit_s_own_files():
    """bootstrap makes server_tmp_dir mlflow's 0700 and the servers empty their part of it:
    no directory the kit keeps anything in may be there, or above it."""
    roots = (rules.DEFAULT_SERVER_TMP_DIR, *rules.SERVER_TMP_ROOTS)
    for path in PATHS.values():
        for root in roots:
            assert not PurePosixPath(path).is_relative_to(root), (path, root)
    # Nor a path the programs and templates spell themselves (the backup's work directory...).
    sources = [*(REPO / "provisioning").rglob("*.py"), *(REPO / "templates").iterdir()]
    spelled = {
        (source.name, literal)
        for source in sources
        if source.name != "rules.py"
        for literal in re.findall(r"[\"'](/[\w./-]+)", source.read_text())
        if any(PurePosixPath(literal).is_relative_to(root) for root in roots)
    }
    assert spelled == set()


def test_backup_gc_and_metrics_settings_are_accepted_as_written():
    deployment = Deployment(
        **valid_settings(
            database_backup="managed", db_instance="mlflow-prod-db", db_location="eu-west-1",
            gc_older_than="1d2h3m4s", gc_schedule="*-*-* 03:30:00",
            metrics_allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"],
        )
    )  # fmt: skip
    assert deployment.metrics_allowed_cidrs == ("10.0.0.0/8", "2001:db8::/32")
    assert Deployment(**valid_settings(db_instance="", db_location="")).db_instance is None


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_the_managed_database_comes_from_the_outputs(cloud):
    outputs = dict(RECORDED_OUTPUTS[cloud], db_instance_id="mlflow-dev-db")
    outputs.setdefault("region", "eu-west-1")
    outputs.setdefault("gcp_project", "my-project-id")
    deployment = deployment_from_outputs(outputs)
    assert deployment.db_instance == "mlflow-dev-db"
    assert deployment.db_location == outputs["region" if cloud == "aws" else "gcp_project"]


def test_model_endpoint_defaults_and_sizes_per_model():
    deployment = Deployment(**valid_settings())
    assert (deployment.model_workers, deployment.model_memory_mb) == (1, 512)
    assert deployment.model_endpoints == {} and deployment.model_follow_seconds == 60
    sized = Deployment(**valid_settings(model_endpoints={"demo-classifier": {"workers": 2}}))
    assert sized.model_endpoints == {"demo-classifier": {"workers": 2}}


def test_letsencrypt_defaults_public_host_to_domain():
    deployment = Deployment(
        **valid_settings(tls_mode="letsencrypt", domain="mlflow.example.com", acme_email="a@b.io")
    )
    assert deployment.public_host == "mlflow.example.com"
    assert deployment.tracking_url == "https://mlflow.example.com"


def test_ipv6_public_host_is_bracketed_in_the_tracking_url():
    deployment = Deployment(**valid_settings(host="2001:db8::10"))
    assert deployment.tracking_url == "https://[2001:db8::10]"


# --------------------------------------------------------------------------- backend URI


def test_url_encoded_password_parses_like_sqlalchemy():
    deployment = Deployment(**valid_settings())
    url = make_url(deployment.backend_store_uri.reveal())
    assert url.drivername == "postgresql+psycopg2"
    assert url.password == NASTY_PASSWORD
    assert (url.username, url.host, url.port, url.database) == (
        "mlflow",
        "10.20.0.3",
        5432,
        "mlflow",
    )


def test_plain_postgresql_scheme_is_rewritten_with_a_note():
    uri = NASTY_URI.replace("postgresql+psycopg2://", "postgresql://")
    deployment = Deployment(**valid_settings(backend_store_uri=uri))
    assert deployment.backend_store_uri.reveal() == NASTY_URI
    assert len(deployment.notes) == 1
    assert "postgresql+psycopg2://" in deployment.notes[0]
    assert NASTY_PASSWORD_ENCODED not in deployment.notes[0]


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql+psycopg2://mlflow:pw@db.internal/mlflow",
        "postgresql+psycopg2://mlflow:pw@db.internal:6432/mlflow?sslmode=require",
        "postgresql+psycopg2://mlflow@[2001:db8::5]:5432/mlflow",
        "postgresql+psycopg2://mlflow:a%3Ab%2540@127.0.0.1/mlflow",
    ],
)
def test_valid_backend_uris(uri):
    assert Deployment(**valid_settings(backend_store_uri=uri)).backend_store_uri.reveal() == uri


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("postgres://mlflow:pw@db/mlflow", "scheme"),
        ("mysql+pymysql://mlflow:pw@db/mlflow", "scheme"),
        ("sqlite:///mlflow.db", "scheme"),
        ("postgresql+psycopg://mlflow:pw@db/mlflow", "scheme"),
        ("db.internal:5432/mlflow", "scheme"),
        ("postgresql+psycopg2://mlflow:p@ss@db/mlflow", "'@'"),  # raw @ in the password
        ("postgresql+psycopg2://mlflow:pa/ss@db/mlflow", "'@'"),  # raw / ends the host part
        ("postgresql+psycopg2://mlflow:pa?ss@db/mlflow", "'@'"),
        ("postgresql+psycopg2://mlflow:pa#ss@db/mlflow", "'@'"),
        ("postgresql+psycopg2://mlflow:100%@db/mlflow", "%XX"),
        ("postgresql+psycopg2://mlflow:pa ss@db/mlflow", "whitespace"),
        ("postgresql+psycopg2://db.internal/mlflow", "'@'"),
        ("postgresql+psycopg2://:pw@db/mlflow", "user"),
        ("postgresql+psycopg2://mlflow:@db/mlflow", "password"),
        ("postgresql+psycopg2://mlflow:pw@/mlflow", "host"),
        ("postgresql+psycopg2://mlflow:pw@:5432/mlflow", "host"),
        ("postgresql+psycopg2://mlflow:pw@db:port/mlflow", "port"),
        ("postgresql+psycopg2://mlflow:pw@db:70000/mlflow", "port"),
        ("postgresql+psycopg2://mlflow:pw@db", "database"),
        ("postgresql+psycopg2://mlflow:pw@db/", "database"),
        ("postgresql+psycopg2://mlflow:pw@db/a/b", "database"),
    ],
)
def test_invalid_backend_uris_name_the_key_and_never_the_uri(uri, why):
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(backend_store_uri=uri))
    error = raised.value
    assert error.key == "backend_store_uri"
    assert why in error.allowed
    assert "'backend_store_uri'" in str(error)
    assert "pw@" not in str(error) and "pa" not in str(error).split("allowed")[0]
    assert uri not in str(error) and uri not in repr(error.value) and uri not in repr(error)
    assert isinstance(error.value, Secret)


# --------------------------------------------------------------------------- table of errors

PEM_MISSING = "/nonexistent/ca.crt"

#: (changes to valid settings, key the error must name)
INVALID = [
    ({"host": ""}, "host"),
    ({"host": "   "}, "host"),
    ({"host": "https://example.com"}, "host"),
    ({"host": "bad host"}, "host"),
    ({"host": None}, "host"),
    ({"ssh_user": ""}, "ssh_user"),
    ({"ssh_user": "root; rm"}, "ssh_user"),
    # The same rule as the stack's sshUser (stacks/rules.py): never root or the server's user.
    ({"ssh_user": "root"}, "ssh_user"),
    ({"ssh_user": "mlflow"}, "ssh_user"),
    ({"ssh_host_key": "ssh-ed25519 not-base64"}, "ssh_host_key"),
    (
        {
            "ssh_host_key": "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGq8hV3S2DfP2r7fT0kXy0y3wqYbW6gq4cQm1Jr1r1r1"
        },
        "ssh_host_key",
    ),  # an ed25519 blob called rsa
    ({"db_tls": "prefer"}, "db_tls"),
    ({"db_ca_url": "http://truststore.example.com/b.pem"}, "db_ca_url"),
    ({"db_ca_pem": "not a certificate"}, "db_ca_pem"),
    (
        {
            "db_ca_url": "https://truststore.example.com/b.pem",
            "db_ca_pem": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        },
        "db_ca_pem",
    ),
    ({"acme_directory_url": "http://acme.example.com/dir"}, "acme_directory_url"),
    ({"keep_environments": 1}, "keep_environments"),
    ({"telemetry": "yes"}, "telemetry"),
    ({"db_max_connections": 5}, "db_max_connections"),
    ({"ssh_port": 0}, "ssh_port"),
    ({"ssh_port": 65536}, "ssh_port"),
    ({"ssh_port": "22"}, "ssh_port"),
    ({"ssh_port": True}, "ssh_port"),
    ({"ssh_key_file": 42}, "ssh_key_file"),
    ({"cloud": "azure"}, "cloud"),
    ({"environment": "staging"}, "environment"),
    ({"public_host": "example.com/path"}, "public_host"),
    ({"tracking_url": "http://203.0.113.10"}, "tracking_url"),
    ({"tracking_url": "https://203.0.113.10/mlflow"}, "tracking_url"),
    ({"tracking_url": "https://user:pw@203.0.113.10"}, "tracking_url"),
    ({"tracking_url": "https://203.0.113.10:99999"}, "tracking_url"),
    ({"tracking_url": "https://"}, "tracking_url"),
    ({"backend_store_uri": ""}, "backend_store_uri"),
    ({"backend_store_uri": None}, "backend_store_uri"),
    ({"artifacts_destination": "gs://bucket-1/x"}, "artifacts_destination"),  # aws wants s3
    ({"cloud": "gcp", "artifacts_destination": "s3://bucket-1/x"}, "artifacts_destination"),
    ({"artifacts_destination": "s3:///prefix"}, "artifacts_destination"),
    ({"artifacts_destination": "file:///srv/artifacts"}, "artifacts_destination"),
    ({"artifacts_destination": "s3://Bad_Bucket/x"}, "artifacts_destination"),
    ({"cloud": "local", "artifacts_destination": "wasbs://c@a.blob/x"}, "artifacts_destination"),
    ({"admin_username": ""}, "admin_username"),
    ({"admin_username": "ad:min"}, "admin_username"),
    ({"admin_password": "short-pw"}, "admin_password"),
    ({"admin_password": ""}, "admin_password"),
    ({"admin_password": "twelve-chars\nsecond-line"}, "admin_password"),
    ({"artifact_mode": "proxy"}, "artifact_mode"),
    ({"mlflow_version": "3.17"}, "mlflow_version"),
    ({"mlflow_version": ">=3.17.2"}, "mlflow_version"),
    ({"mlflow_version": "latest"}, "mlflow_version"),
    ({"python_version": "python3"}, "python_version"),
    ({"python_version": "2.7"}, "python_version"),
    ({"miniforge_url": "ftp://example.com/Miniforge3.sh"}, "miniforge_url"),
    ({"miniforge_url": ""}, "miniforge_url"),
    ({"miniforge_sha256": "abc"}, "miniforge_sha256"),
    ({"miniforge_sha256": "g" * 64}, "miniforge_sha256"),
    ({"extra_ca_certs": PEM_MISSING}, "extra_ca_certs"),  # a string, not a list
    ({"extra_ca_certs": [PEM_MISSING]}, "extra_ca_certs"),
    ({"tls_mode": "acme"}, "tls_mode"),
    ({"tls_mode": "provided"}, "tls_cert_file"),
    ({"tls_mode": "provided", "tls_cert_file": PEM_MISSING}, "tls_cert_file"),
    ({"tls_mode": "letsencrypt", "acme_email": "a@b.io"}, "domain"),
    ({"tls_mode": "letsencrypt", "domain": "203.0.113.10", "acme_email": "a@b.io"}, "domain"),
    ({"tls_mode": "letsencrypt", "domain": "mlflow.example.com"}, "acme_email"),
    ({"tls_mode": "letsencrypt", "domain": "m.example.com", "acme_email": "x"}, "acme_email"),
    ({"storage_env": ["AWS_DEFAULT_REGION=eu-west-1"]}, "storage_env"),
    ({"storage_env": {"1BAD": "x"}}, "storage_env.1BAD"),
    ({"storage_env": {"BAD-NAME": "x"}}, "storage_env.BAD-NAME"),
    ({"storage_env": {"AWS_DEFAULT_REGION": 1}}, "storage_env.AWS_DEFAULT_REGION"),
    ({"storage_env": {"MLFLOW_BACKEND_STORE_URI": "x"}}, "storage_env.MLFLOW_BACKEND_STORE_URI"),
    ({"storage_env": {"A": "line\nbreak"}}, "storage_env.A"),
    ({"storage_secret_env": {"bad name": "x"}}, "storage_secret_env.bad name"),
    (
        {"storage_secret_env": {"AWS_SECRET_ACCESS_KEY": 5}},
        "storage_secret_env.AWS_SECRET_ACCESS_KEY",
    ),
    ({"server_instances": 0}, "server_instances"),
    ({"server_instances": 65}, "server_instances"),
    ({"server_instances": 2.0}, "server_instances"),
    ({"job_execution": "yes"}, "job_execution"),
    ({"stream_downloads": "yes"}, "stream_downloads"),
    ({"stream_downloads": True, "job_execution": True}, "stream_downloads"),
    ({"storage_env": {"TMPDIR": "/srv/x"}}, "storage_env.TMPDIR"),
    ({"server_tmp_dir": "var/lib/mlflow/tmp"}, "server_tmp_dir"),
    ({"server_tmp_dir": ""}, "server_tmp_dir"),
    ({"server_tmp_dir": 7}, "server_tmp_dir"),
    ({"server_tmp_dir": "/proc/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/sys/fs/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/dev/shm/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/run/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/tmp/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/var/tmp/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/etc/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/var/lib/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/var/lib/postgresql"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/var/cache/apt"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/srv"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/srv/../etc/mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/srv//mlflow"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/srv/mlflow/"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/srv/mlflow tmp"}, "server_tmp_dir"),
    ({"server_tmp_dir": "/srv/%i"}, "server_tmp_dir"),
    ({"server_tmp_min_free_gib": 0}, "server_tmp_min_free_gib"),
    ({"server_tmp_min_free_gib": 16385}, "server_tmp_min_free_gib"),
    ({"server_tmp_min_free_gib": "8"}, "server_tmp_min_free_gib"),
    ({"server_tmp_min_free_gib": 8.0}, "server_tmp_min_free_gib"),
    ({"server_tmp_min_free_gib": True}, "server_tmp_min_free_gib"),
    ({"flask_secret_key": "short"}, "flask_secret_key"),
    ({"db_connection_name": 7}, "db_connection_name"),
    ({"model_workers": 0}, "model_workers"),
    ({"model_workers": 17}, "model_workers"),
    ({"model_memory_mb": 64}, "model_memory_mb"),
    ({"model_memory_mb": "512"}, "model_memory_mb"),
    ({"model_follow_seconds": 5}, "model_follow_seconds"),
    ({"model_endpoints": ["demo"]}, "model_endpoints"),
    ({"model_endpoints": {"bad name": {"workers": 2}}}, "model_endpoints.bad name"),
    ({"model_endpoints": {"demo": {"cpus": 2}}}, "model_endpoints.demo"),
    ({"model_endpoints": {"demo": {}}}, "model_endpoints.demo"),
    ({"model_endpoints": {"demo": {"workers": 0}}}, "model_endpoints.demo.workers"),
    ({"model_endpoints": {"demo": {"memory_mb": 100}}}, "model_endpoints.demo.memory_mb"),
    ({"db_instance": "1-starts-with-a-digit"}, "db_instance"),
    ({"db_location": "EU West"}, "db_location"),
    ({"database_backup": "snapshot"}, "database_backup"),
    ({"database_backup": "managed"}, "db_instance"),
    ({"database_backup": "managed", "db_instance": "mlflow-db"}, "db_location"),
    ({"cloud": "local", "database_backup": "managed"}, "database_backup"),
    ({"gc_enabled": "yes"}, "gc_enabled"),
    ({"gc_older_than": "30 days"}, "gc_older_than"),
    ({"gc_older_than": ""}, "gc_older_than"),
    ({"gc_older_than": 30}, "gc_older_than"),
    ({"gc_schedule": "daily; rm -rf /"}, "gc_schedule"),
    ({"gc_schedule": "daily\nExecStart=/bin/sh"}, "gc_schedule"),
    ({"metrics_allowed_cidrs": "10.0.0.0/8"}, "metrics_allowed_cidrs"),
    ({"metrics_allowed_cidrs": ["10.0.0.1/8"]}, "metrics_allowed_cidrs"),
    ({"metrics_allowed_cidrs": ["not a network"]}, "metrics_allowed_cidrs"),
]


@pytest.mark.parametrize(("changes", "key"), INVALID, ids=[repr(c) for c, _ in INVALID])
def test_every_validation_error_names_its_key_value_and_what_is_allowed(changes, key):
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(**changes))
    error = raised.value
    assert error.key == key
    assert f"setting {key!r}" in str(error)
    assert error.allowed and error.allowed in str(error)
    message = str(error) + repr(error) + repr(error.value)
    for secret in (ADMIN_PASSWORD, NASTY_PASSWORD_ENCODED):
        assert secret not in message
    if key in settings_module.SECRET_FIELDS:
        assert REDACTED in str(error)


@pytest.mark.parametrize(
    "changes",
    [
        {"admin_password": "leak-me-pls"},  # one short of 12
        {"admin_password": "leak-me-please\nline"},
        {"flask_secret_key": "leak-me-pls"},
        {"storage_secret_env": {"AWS_SECRET_ACCESS_KEY": "leak\nme-please"}},
        {"storage_secret_env": "leak-me-please"},
        {"backend_store_uri": "leak://mlflow:pw@db/mlflow"},
    ],
)
def test_errors_about_secrets_never_show_the_secret(changes):
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(**changes))
    assert "leak" not in str(raised.value)
    assert "leak" not in repr(raised.value.value)
    assert REDACTED in str(raised.value)


def test_provided_tls_and_ca_files_are_accepted(pem_dir):
    deployment = Deployment(
        **valid_settings(
            tls_mode="provided",
            tls_cert_file=str(pem_dir / "server.crt"),
            tls_key_file=str(pem_dir / "server.key"),
            extra_ca_certs=[str(pem_dir / "ca.crt")],
        )
    )
    assert deployment.extra_ca_certs == (str(pem_dir / "ca.crt"),)


def test_a_key_file_is_not_a_certificate(pem_dir):
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(extra_ca_certs=[str(pem_dir / "server.key")]))
    assert raised.value.key == "extra_ca_certs"
    with pytest.raises(SettingsError) as raised:
        Deployment(
            **valid_settings(
                tls_mode="provided",
                tls_cert_file=str(pem_dir / "server.crt"),
                tls_key_file=str(pem_dir / "server.crt"),
            )
        )
    assert raised.value.key == "tls_key_file"


def test_sha256_is_normalised_to_lower_case():
    digest = "AB" * 32
    assert Deployment(**valid_settings(miniforge_sha256=digest)).miniforge_sha256 == "ab" * 32


# --------------------------------------------------------------------------- stack outputs


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_deployment_from_recorded_outputs(cloud):
    outputs = RECORDED_OUTPUTS[cloud]
    deployment = deployment_from_outputs(outputs)
    assert deployment.cloud == cloud
    assert deployment.host == outputs["host"]
    assert deployment.public_host == outputs["host"]
    assert deployment.tracking_url == outputs["tracking_url"]
    assert deployment.artifacts_destination == outputs["artifacts_destination"]
    assert deployment.admin_password.reveal() == ADMIN_PASSWORD
    assert make_url(deployment.backend_store_uri.reveal()).password == NASTY_PASSWORD
    assert deployment.db_connection_name == outputs.get("db_connection_name")
    assert deployment.environment == outputs["environment"]


@pytest.mark.parametrize("missing", contract.COMMON_OUTPUTS)
def test_missing_output_is_named(missing):
    outputs = dict(RECORDED_OUTPUTS["gcp"])
    del outputs[missing]
    with pytest.raises(SettingsError) as raised:
        deployment_from_outputs(outputs)
    assert raised.value.key == missing
    assert f"setting {missing!r} is missing" in str(raised.value)


def test_a_group_stack_needs_its_hosts_and_gives_them_its_shared_secrets():
    outputs = dict(
        RECORDED_OUTPUTS["gcp"],
        topology="group",
        hosts=[],
        flask_secret_key="f" * 32,
        kek_passphrase="k" * 40,
    )
    with pytest.raises(SettingsError, match="cannot list them") as raised:
        deployment_from_outputs(outputs)
    assert raised.value.key == "hosts"
    group = deployment_from_outputs(outputs, {"hosts": ["10.0.0.2", "10.0.0.3"]})
    assert group.hosts == ("10.0.0.2", "10.0.0.3") and group.host == "10.0.0.2"
    assert group.flask_secret_key.reveal() == "f" * 32
    assert group.kek_passphrase.reveal() == "k" * 40
    # The balancer's name stays what users reach, and what the servers accept.
    assert group.tracking_url == RECORDED_OUTPUTS["gcp"]["tracking_url"]
    assert group.public_host == RECORDED_OUTPUTS["gcp"]["host"]
    single = deployment_from_outputs(dict(RECORDED_OUTPUTS["gcp"], topology="single"))
    assert single.host == RECORDED_OUTPUTS["gcp"]["host"] and single.hosts == ()
    with pytest.raises(SettingsError) as raised:
        deployment_from_outputs(dict(RECORDED_OUTPUTS["gcp"], topology="fleet"))
    assert raised.value.key == "topology"


def test_secret_output_without_show_secrets_is_explained():
    outputs = dict(RECORDED_OUTPUTS["aws"], admin_password={"4dabf18193072939515e22adb298388d": 1})
    with pytest.raises(SettingsError, match="--show-secrets") as raised:
        deployment_from_outputs(outputs)
    assert raised.value.key == "admin_password"


def test_outputs_with_overrides(pem_dir, monkeypatch):
    monkeypatch.setenv("KIT_TEST_FLASK_KEY", "flask-key-from-the-environment")
    deployment = deployment_from_outputs(
        RECORDED_OUTPUTS["aws"],
        {
            "ssh_key_file": "~/.ssh/id_ed25519",
            "extra_ca_certs": [str(pem_dir / "ca.crt")],
            "miniforge_url": "http://10.0.2.2:8000/Miniforge3-standin.sh",
            "server_instances": 3,
            "flask_secret_key": {"env": "KIT_TEST_FLASK_KEY"},
        },
    )
    assert deployment.ssh_key_file == "~/.ssh/id_ed25519"
    assert deployment.extra_ca_certs == (str(pem_dir / "ca.crt"),)
    assert deployment.server_instances == 3
    assert deployment.flask_secret_key.reveal() == "flask-key-from-the-environment"


def test_unknown_override_is_rejected_listing_allowed_keys():
    with pytest.raises(SettingsError) as raised:
        deployment_from_outputs(RECORDED_OUTPUTS["aws"], {"admin_pasword": "typo-ed-secret"})
    assert raised.value.key == "admin_pasword"
    assert "ssh_key_file" in raised.value.allowed
    assert "typo-ed-secret" not in str(raised.value)


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_deployment_from_stack_engineers_fixture(cloud):
    path = FIXTURES / f"stack-output-{cloud}.json"
    if not path.exists():
        pytest.skip(
            f"{path.relative_to(REPO)} is not recorded yet (written by the stack engineers)"
        )
    outputs = json.loads(path.read_text())
    deployment = deployment_from_outputs(outputs)
    assert deployment.cloud == cloud
    for name in contract.COMMON_OUTPUTS:
        assert name in outputs
    assert deployment.backend_store_uri.reveal().startswith("postgresql+psycopg2://")
    assert deployment.tracking_url.startswith("https://")


# --------------------------------------------------------------------------- settings file


def _write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def test_settings_file_with_env_and_file_indirections(tmp_path, monkeypatch, pem_dir):
    monkeypatch.setenv("KIT_TEST_BACKEND_URI", NASTY_URI)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin").write_text(ADMIN_PASSWORD + "\n")
    (tmp_path / "secrets" / "s3-secret").write_text("s3-secret-value")
    shutil.copy(pem_dir / "ca.crt", tmp_path / "local-ca.crt")
    path = _write(
        tmp_path / "settings.yaml",
        {
            "host": "192.168.122.10",
            "ssh_user": "debian",
            "ssh_port": 2222,
            "cloud": "local",
            "environment": "test",
            "backend_store_uri": {"env": "KIT_TEST_BACKEND_URI"},
            "artifacts_destination": "s3://mlflow-local/artifacts",
            "admin_password": {"file": "secrets/admin"},
            "extra_ca_certs": ["local-ca.crt"],
            "storage_env": {"MLFLOW_S3_ENDPOINT_URL": "https://10.0.2.2:5000"},
            "storage_secret_env": {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": {"file": str(tmp_path / "secrets" / "s3-secret")},
            },
            "job_execution": True,
        },
    )
    deployment = deployment_from_file(path)
    assert deployment.backend_store_uri.reveal() == NASTY_URI
    assert deployment.admin_password.reveal() == ADMIN_PASSWORD  # trailing newline dropped
    assert deployment.extra_ca_certs == (str(tmp_path / "local-ca.crt"),)
    assert deployment.storage_secret_env["AWS_SECRET_ACCESS_KEY"].reveal() == "s3-secret-value"
    assert deployment.storage_secret_env["AWS_ACCESS_KEY_ID"] == Secret("testing")
    assert deployment.ssh_port == 2222
    assert deployment.job_execution is True
    assert "s3-secret-value" not in repr(deployment)


def test_settings_file_unknown_key_lists_allowed_keys(tmp_path):
    path = _write(tmp_path / "s.yaml", valid_settings(admin_passwrd="x"))
    with pytest.raises(SettingsError) as raised:
        deployment_from_file(path)
    assert raised.value.key == "admin_passwrd"
    for key in SETTINGS_KEYS:
        assert key in raised.value.allowed


@pytest.mark.parametrize("missing", settings_module.REQUIRED_KEYS)
def test_settings_file_missing_required_key_is_named(tmp_path, missing):
    document = valid_settings()
    del document[missing]
    with pytest.raises(SettingsError) as raised:
        deployment_from_file(_write(tmp_path / "s.yaml", document))
    assert raised.value.key == missing
    assert "is missing" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"env": "KIT_TEST_UNSET_VARIABLE"}, "KIT_TEST_UNSET_VARIABLE"),
        ({"file": "no-such-file"}, "no-such-file"),
        ({"vault": "secret/x"}, "env"),
        ({"env": "A", "file": "b"}, "env"),
        (["a", "list"], "env"),
    ],
)
def test_bad_secret_indirections_are_named(tmp_path, monkeypatch, value, expected):
    monkeypatch.delenv("KIT_TEST_UNSET_VARIABLE", raising=False)
    path = _write(tmp_path / "s.yaml", valid_settings(admin_password=value))
    with pytest.raises(SettingsError) as raised:
        deployment_from_file(path)
    assert raised.value.key == "admin_password"
    assert expected in str(raised.value)


def test_yaml_errors_do_not_quote_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("host: h\nadmin_password: sup3r: s3cret: [\n")
    with pytest.raises(SettingsError) as raised:
        deployment_from_file(path)
    assert "line 2" in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("text", ["- a list\n", "host: [unclosed\n", ""])
def test_settings_file_must_be_a_yaml_mapping(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as raised:
        deployment_from_file(path)
    assert raised.value.key == "settings file"


def test_example_settings_file_documents_every_key_and_loads(tmp_path, monkeypatch):
    example = REPO / "provisioning" / "settings.example.yaml"
    text = example.read_text()
    document = yaml.safe_load(text)
    assert list(document) == list(SETTINGS_KEYS)
    lines = text.splitlines()
    for key in SETTINGS_KEYS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"
    # It loads as written, given the secrets it points at.
    shutil.copy(example, tmp_path / "settings.yaml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin_password").write_text("a-long-admin-password\n")
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://mlflow:pw@db.internal/mlflow")
    deployment = deployment_from_file(tmp_path / "settings.yaml")
    assert deployment.backend_store_uri.reveal().startswith("postgresql+psycopg2://")
    assert deployment.miniforge_url == settings_module.DEFAULT_MINIFORGE_URL
    assert deployment.miniforge_sha256 == settings_module.DEFAULT_MINIFORGE_SHA256
    assert deployment.mlflow_version == settings_module.DEFAULT_MLFLOW_VERSION


def test_settings_package_imports_only_stdlib_and_yaml():
    allowed = {"__future__", "base64", "dataclasses", "ipaddress", "logging", "os", "re", "collections",
               "pathlib", "typing", "urllib", "yaml", "stacks"}  # fmt: skip
    for module in Path(settings_module.__file__).parent.glob("*.py"):
        for line in module.read_text().splitlines():
            if line.startswith(("import ", "from ")):
                name = line.split()[1]
                assert (
                    name.split(".")[0] in allowed
                    or name.startswith("provisioning.settings")
                    # Pure figures, shared with bootstrap (a group's database share).
                    or name == "provisioning.sizing"
                    # Which locks are committed (reads provisioning/locks/ with the stdlib).
                    or name == "provisioning.lock"
                ), f"{module.name}: {line}"
    sizing_imports = [
        line.split()[1]
        for line in Path(sizing_module.__file__).read_text().splitlines()
        if line.startswith(("import ", "from "))
    ]
    assert set(sizing_imports) <= {"__future__", "dataclasses"}
    lock_imports = {
        line.split()[1]
        for line in Path(lock_module.__file__).read_text().splitlines()
        if line.startswith(("import ", "from "))
    }
    assert lock_imports <= set(sys.stdlib_module_names) | {"__future__"}, lock_imports
    assert unquote(NASTY_PASSWORD_ENCODED) == NASTY_PASSWORD
