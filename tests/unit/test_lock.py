"""The server environment's pip lock: committed, complete, enforced, and what settings say
when there is none."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning import artifact_streaming, lock
from provisioning.settings import Deployment, SettingsError
from tests.standin.conda_installer import FAKE_CONDA
from tests.unit.conftest import valid_settings

COMMITTED = sorted(lock.LOCKS_DIR.glob("*.txt"))


def test_the_default_version_and_the_default_plugin_have_a_lock():
    assert lock.find(Deployment.mlflow_version) is not None
    assert lock.find(Deployment.mlflow_version, Deployment.oidc_plugin_version) is not None


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_every_committed_lock_pins_each_package_by_version_and_sha256(path):
    text = path.read_text()
    lock.check(text)  # every requirement name==version, a sha256 under each, no options
    match = re.fullmatch(r"mlflow-([\d.]+)(?:-oidc-([\d.]+))?\.txt", path.name)
    top = lock.requirements(match[1], match[2])
    # Made by the command, for what the name says: its header lists the requirements...
    assert f"Requirements: {', '.join(top)}\n" in text
    # ... and each of them is pinned in it (MLflow at exactly the file's version).
    for requirement in top:
        name = re.split(r"[\[=]", requirement)[0]
        assert re.search(rf"^{re.escape(name)}==\S+ (; [^\\]+ )?\\$", text, re.M), name
    assert f"\nmlflow=={match[1]} \\\n" in text
    # Nothing names where the files come from (no registry host may be committed).
    assert "://" not in text and "--index" not in text and "--find-links" not in text
    hashes = re.findall(r"--hash=sha256:(\S+)", text)
    assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("boto3>=1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n", "not pinned"),
        ("boto3==1.0\n", "not pinned"),
        ("boto3==1.0 \\\n    # via x\n", "no sha256 follows"),
        ("--index-url https://example.invalid/simple\n", "no options or addresses"),
        ("boto3 @ https://example.invalid/b.whl \\\n    --hash=sha256:" + "a" * 64 + "\n",
         "no options or addresses"),
    ],
)  # fmt: skip
def test_check_refuses_what_require_hashes_would_not_take_as_a_complete_pin(text, why):
    with pytest.raises(lock.LockError, match=why):
        lock.check(text)


# --------------------------------------------------------------------------- the maintainer command


@pytest.fixture
def local_index(tmp_path) -> Path:
    """A folder holding one wheel (the kit's own): an index uv can resolve from offline."""
    wheel = artifact_streaming.wheel()
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / wheel.filename).write_bytes(wheel.data)
    return tmp_path / "index"


def test_compile_pins_each_file_by_its_sha256_and_names_no_index(local_index):
    wheel = artifact_streaming.wheel()
    text = lock.compile_lock(
        [artifact_streaming.DISTRIBUTION], "python -m provisioning.lock 9.9.9",
        ("--no-index", "--find-links", str(local_index)),
    )  # fmt: skip
    lock.check(text)
    assert text.startswith("# The MLflow server environment's pip packages, locked. Made by "
                           "`python -m provisioning.lock 9.9.9`")  # fmt: skip
    version = artifact_streaming.version()
    digest = hashlib.sha256(wheel.data).hexdigest()
    assert f"\nmlflow-kit-artifacts=={version} \\\n    --hash=sha256:{digest}\n" in text
    assert str(local_index) not in text


def test_a_version_that_cannot_be_resolved_fails_loudly_naming_it(local_index):
    with pytest.raises(lock.LockError, match=r"cannot resolve mlflow\[auth\]==3\.17\.2") as caught:
        lock.generate("3.17.2", index_args=("--no-index", "--find-links", str(local_index)))
    assert "mlflow" in str(caught.value).split("\n", 1)[1]  # uv's own reason follows


# --------------------------------------------------------------------------- settings


def test_a_version_without_a_lock_is_refused_naming_the_command_that_makes_one():
    with pytest.raises(SettingsError) as caught:
        Deployment(**valid_settings(mlflow_version="3.17.1"))
    said = str(caught.value)
    assert caught.value.key == "mlflow_version" and "'3.17.1'" in said
    assert "3.17.2" in said  # the versions that have one
    assert "`python -m provisioning.lock 3.17.1`" in said and "install_from_lock: false" in said
    assert Deployment(**valid_settings(mlflow_version="3.17.1", install_from_lock=False))


def test_a_plugin_version_without_a_lock_names_the_plugin_and_its_command():
    oidc = {"auth": "oidc", "oidc_issuer": "https://idp.example.com/realms/acme",
            "oidc_client_id": "mlflow", "oidc_client_secret": "client-secret-1",
            "oidc_allowed_groups": ["mlflow-users"]}  # fmt: skip
    assert Deployment(**valid_settings(**oidc)).install_from_lock is True
    with pytest.raises(SettingsError) as caught:
        Deployment(**valid_settings(**oidc, oidc_plugin_version="10.1.2"))
    assert caught.value.key == "mlflow_version"
    assert "with mlflow-oidc-auth 10.1.2 (none)" in str(caught.value)
    assert "`python -m provisioning.lock 3.17.2 --oidc 10.1.2`" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "key"),
    [({"install_from_lock": "yes"}, "install_from_lock"),
     ({"python_version": "3.10"}, "python_version")],
)  # fmt: skip
def test_bad_lock_settings_name_their_key(changes, key):
    with pytest.raises(SettingsError) as caught:
        Deployment(**valid_settings(**changes))
    assert caught.value.key == key


# --------------------------------------------------------------------------- enforced on install


def build(tmp_path: Path, lock_text: str, index: Path) -> subprocess.CompletedProcess:
    """The conda stand-in builds an environment the way bootstrap's environment.yml asks:
    Python and pip, then --require-hashes -r LOCK, from ``index`` only."""
    conda = tmp_path / "conda"
    conda.write_text(FAKE_CONDA)
    conda.chmod(0o755)
    (tmp_path / "lock.txt").write_text(lock_text)
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (tmp_path / "environment.yml").write_text(
        f"dependencies:\n  - python={python}\n  - pip\n  - pip:\n"
        f"      - --require-hashes\n      - -r {tmp_path / 'lock.txt'}\n"
    )
    return subprocess.run(
        [sys.executable, str(conda), "env", "create", "--quiet", "--prefix", str(tmp_path / "env"),
         "--file", str(tmp_path / "environment.yml")],
        env={"PATH": "/usr/bin:/bin", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_pip_installs_the_locked_file_and_refuses_one_whose_sha256_differs(tmp_path, local_index):
    wheel = artifact_streaming.wheel()
    pin = f"mlflow-kit-artifacts=={artifact_streaming.version()} \\\n    --hash=sha256:"
    good = tmp_path / "good"
    good.mkdir()
    built = build(good, pin + hashlib.sha256(wheel.data).hexdigest() + "\n", local_index)
    assert built.returncode == 0, built.stderr
    assert list((good / "env").glob("lib/python*/site-packages/kit_artifacts.py"))

    # The same lock, a file changed on the way: pip stops before installing anything.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "index").mkdir()
    (tampered / "index" / wheel.filename).write_bytes(wheel.data + b"\0")
    refused = build(tampered, pin + hashlib.sha256(wheel.data).hexdigest() + "\n",
                    tampered / "index")  # fmt: skip
    assert refused.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in refused.stderr
    assert not list((tampered / "env").glob("lib/python*/site-packages/kit_artifacts.py"))

    # A requirement the lock does not pin is refused too (hash-checking covers every one).
    unpinned = tmp_path / "unpinned"
    unpinned.mkdir()
    refused = build(unpinned, "mlflow-kit-artifacts\n", local_index)
    assert refused.returncode != 0 and "--require-hashes" in refused.stderr
