"""The conda stand-in reads the kit's own environment.yml the way conda would; its installer
leaves a base environment whose Python makes venvs, as Miniforge's does."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning import artifact_streaming, lock
from provisioning.layout import PATHS
from provisioning.render import context, render
from provisioning.settings import Deployment
from tests.standin.conda_installer import FAKE_CONDA, build_installer


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


#: The guest's interpreter: Debian's python3 with python3-venv (tests/localcloud/image.py).
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def debian_python_with_venv() -> bool:
    python = shutil.which("python3", path=GUEST_PATH)
    if not python:
        return False
    check = subprocess.run([python, "-m", "ensurepip", "--version"], capture_output=True)
    return check.returncode == 0


def install(installer: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(installer), *args],
        capture_output=True,
        text=True,
        env={"PATH": GUEST_PATH},
        timeout=120,
    )


@pytest.mark.service  # two venvs with pip: ~6 s
@pytest.mark.skipif(
    not debian_python_with_venv(), reason="needs Debian's python3 with python3-venv, as the guest"
)
def test_installer_leaves_a_base_environment_whose_python_makes_venvs_with_pip(tmp_path):
    installer, _ = build_installer(tmp_path / "dl")
    prefix = tmp_path / "miniforge"

    result = install(installer, "-b", "-p", str(prefix))

    assert result.returncode == 0, result.stderr
    conda = subprocess.run([prefix / "bin/conda", "--version"], capture_output=True, text=True)
    assert conda.stdout.startswith("conda ")
    for tool in ("python", "python3", "pip"):
        assert (prefix / "bin" / tool).exists(), tool
    # What the offline install runs: a venv of the installer's own Python, then its pip.
    venv = tmp_path / "env"
    subprocess.run([prefix / "bin/python", "-m", "venv", venv], check=True, timeout=120)
    pip = subprocess.run(
        [venv / "bin/python", "-m", "pip", "--version"], capture_output=True, text=True
    )
    assert pip.returncode == 0 and str(venv) in pip.stdout, pip.stderr
    # Again into the same PREFIX: refused, as Miniforge's installer refuses without -u.
    again = install(installer, "-b", "-p", str(prefix))
    assert again.returncode == 1
    assert f"already exists: '{prefix}'" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["-b"], "-p PREFIX is required"), (["-b", "-x", "-p", "/tmp/y"], "unsupported option -x")],
)
def test_installer_refuses_what_it_does_not_understand(tmp_path, args, message):
    installer, _ = build_installer(tmp_path)
    result = install(installer, *args)
    assert result.returncode == 2
    assert message in result.stderr
