"""The conda stand-in reads the kit's own environment.yml the way conda would."""

from __future__ import annotations

import hashlib

import pytest

from provisioning import artifact_streaming, lock
from provisioning.layout import PATHS
from provisioning.render import context, render
from provisioning.settings import Deployment
from tests.standin.conda_installer import FAKE_CONDA


@pytest.fixture(scope="module")
def parse():
    namespace: dict = {}
    exec(FAKE_CONDA.split('if __name__ == "__main__":')[0], namespace)  # noqa: S102
    return namespace["parse"]


@pytest.mark.parametrize(
    ("destination", "client"),
    [("s3://bucket/p", "boto3"), ("gs://bucket/p", "google-cloud-storage")],
)
def test_conda_and_pip_packages_of_the_rendered_environment(parse, tmp_path, destination, client):
    deployment = Deployment(
        host="h",
        ssh_user="u",
        cloud="local",
        environment="test",
        backend_store_uri="postgresql+psycopg2://a:b@db:5432/d",
        artifacts_destination=destination,
        admin_password="x" * 14,
    )
    path = tmp_path / "environment.yml"
    path.write_text(
        render(
            "environment.yml.j2",
            context(
                deployment,
                server_ports=[5001],
                flask_secret_key="k" * 32,
                job_execution=False,
                kek_passphrase="p" * 48,
            ),
        )
    )

    conda, pip = parse(str(path))

    # conda's part is Python and pip; the rest is what conda hands pip, line by line.
    assert conda == ["python=3.11", "pip"]
    wheel = artifact_streaming.wheel()
    digest = hashlib.sha256(wheel.data).hexdigest()
    assert pip == [
        "--require-hashes",
        f"-r {PATHS['locks_dir']}/{lock.find(deployment.mlflow_version).host_name}",
        f"mlflow_kit_artifacts @ file://{PATHS['kit_wheels_dir']}/{wheel.filename} "
        f"--hash=sha256:{digest}",
    ]
