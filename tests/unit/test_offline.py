"""offline_install: the wheels a host without internet gets, the installer this machine
fetches for it, the settings it needs, and the environment it builds from them."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
import yaml

from provisioning import lock, offline
from provisioning.layout import PATHS
from provisioning.render import context, env_dir, packages_context, pip_section, render
from provisioning.settings import Deployment, SettingsError
from provisioning.settings.rules import DEFAULT_MINIFORGE_PYTHON
from provisioning.steps import conda
from tests.unit.conftest import valid_settings

OTHER_INSTALLER = "ab" * 32


def linux(python_full: str, machine: str = "x86_64", glibc=(2, 36)) -> offline.Target:
    """A CPython on Linux, as the target script reports it."""
    return offline.Target(
        {
            "implementation_name": "cpython", "implementation_version": python_full,
            "os_name": "posix", "platform_machine": machine, "platform_release": "6.1.0",
            "platform_system": "Linux", "platform_version": "#1 SMP",
            "python_full_version": python_full, "platform_python_implementation": "CPython",
            "python_version": ".".join(python_full.split(".")[:2]), "sys_platform": "linux",
        },
        glibc,
    )  # fmt: skip


def offline_deployment(**changes) -> Deployment:
    return Deployment(**valid_settings(**{"offline_install": True, **changes}))


def render_env(deployment: Deployment) -> str:
    ctx = context(deployment, server_ports=[5001], flask_secret_key="f" * 32,
                  job_execution=False, kek_passphrase="k" * 40)  # fmt: skip
    return render("environment.yml.j2", ctx)


# --------------------------------------------------------------------------- the host's wheels


def test_the_target_script_reports_what_packaging_evaluates_markers_with():
    from packaging.markers import default_environment

    out = subprocess.run([sys.executable, "-c", offline._TARGET_SCRIPT],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    target = offline.parse_target(out)
    assert target.markers == default_environment()
    assert target.python_version == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_a_host_without_glibc_is_refused_by_name():
    with pytest.raises(offline.OfflineError, match="not a glibc system"):
        offline.parse_target('{"markers": {}, "glibc": ""}')
    assert offline.parse_target("") is None  # no such Python yet


def test_platforms_run_from_the_hosts_glibc_down_with_the_legacy_aliases_it_accepts():
    x86 = linux("3.12.10", glibc=(2, 36)).platforms()
    assert x86[:2] == ["manylinux_2_36_x86_64", "manylinux_2_35_x86_64"]
    assert x86[x86.index("manylinux_2_17_x86_64") + 1] == "manylinux2014_x86_64"
    assert x86[-2:] == ["manylinux_2_5_x86_64", "manylinux1_x86_64"]
    assert not [p for p in x86 if "2_37" in p or "aarch64" in p]
    arm = linux("3.12.10", machine="aarch64", glibc=(2, 28)).platforms()
    assert arm[0] == "manylinux_2_28_aarch64" and "manylinux2014_aarch64" in arm
    assert not [p for p in arm if p.startswith(("manylinux1", "manylinux2010"))]


def test_the_locks_markers_are_resolved_for_the_hosts_python_not_this_machines():
    found = lock.find("3.17.2")
    for python, numpy, other in (("3.11.9", "2.4.6", "2.5.5"), ("3.12.10", "2.5.5", "2.4.6")):
        wanted = offline.requirements(found, linux(python))
        pins = [line.split(" --hash=")[0] for line in wanted]
        assert f"numpy=={numpy}" in pins and f"numpy=={other}" not in pins
        assert not [p for p in pins if p.startswith("pywin32")]  # sys_platform == 'win32'
        assert not [p for p in pins if ";" in p]
        # Each keeps every hash the lock lists for it.
        numpy_line = next(line for line in wanted if line.startswith(f"numpy=={numpy} "))
        assert numpy_line.count("--hash=sha256:") > 10


def test_the_download_asks_for_the_hosts_python_and_platforms_only():
    target = linux("3.12.10", machine="aarch64", glibc=(2, 31))
    command = offline.download_command(target, offline.Path("/r.txt"), offline.Path("/d"))
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:"):
        assert flag in command
    assert command[command.index("--python-version") + 1] == "3.12"
    assert command[command.index("--implementation") + 1] == "cp"
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms == target.platforms()
    assert command[-2:] == ["-r", "/r.txt"]


# --------------------------------------------------------------------------- the installer


def test_the_installer_is_fetched_once_and_refused_unless_its_sha256_matches(tmp_path):
    source = tmp_path / "Miniforge3.sh"
    source.write_bytes(b"#!/bin/sh\necho installer\n")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(offline.OfflineError) as caught:
        offline.installer(source.as_uri(), OTHER_INSTALLER, cache)
    assert f"sha256 {digest}, but miniforge_sha256 is {OTHER_INSTALLER}" in str(caught.value)
    assert not list((cache / "miniforge").iterdir())  # nothing half-kept
    got = offline.installer(source.as_uri(), digest, cache)
    assert got.read_bytes() == source.read_bytes()
    source.unlink()  # cached: not fetched again
    assert offline.installer(source.as_uri(), digest, cache) == got
    with pytest.raises(offline.OfflineError, match="could not fetch it"):
        offline.installer((tmp_path / "absent.sh").as_uri(), OTHER_INSTALLER, cache)


def test_the_cache_is_the_setting_or_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert offline.cache_dir(None) == tmp_path / "mlflow-kit" / "offline"
    assert offline.cache_dir("/srv/kit") == offline.Path("/srv/kit")


# --------------------------------------------------------------------------- settings


def test_offline_needs_the_lock_and_the_installers_python():
    with pytest.raises(SettingsError) as caught:
        offline_deployment(install_from_lock=False, python_version=DEFAULT_MINIFORGE_PYTHON)
    assert caught.value.key == "offline_install" and "install_from_lock" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        offline_deployment()  # python_version 3.11 with the default (3.12) installer
    assert caught.value.key == "python_version" and "'3.11'" in str(caught.value)
    assert "3.12 with offline_install and the default Miniforge 25.3.1-0" in str(caught.value)
    assert offline_deployment(python_version="3.12").offline_install
    # Another installer's Python is read on the host (the wheelhouse step).
    assert offline_deployment(miniforge_sha256=OTHER_INSTALLER).python_version == "3.11"
    with pytest.raises(SettingsError) as caught:
        offline_deployment(python_version="3.12", offline_install="yes")
    assert caught.value.key == "offline_install"


# --------------------------------------------------------------------------- what the host builds


def test_offline_environment_yml_installs_from_the_wheelhouse_and_names_the_installer():
    online = Deployment(**valid_settings(python_version="3.12"))
    deployment = offline_deployment(python_version="3.12")
    text = render_env(deployment)
    found = lock.find(deployment.mlflow_version)
    wheelhouse = f"{PATHS['wheelhouse_dir']}/{found.host_name.removesuffix('.txt')}"
    pip = next(d for d in yaml.safe_load(text)["dependencies"] if isinstance(d, dict))["pip"]
    assert pip[:4] == ["--no-index", f"--find-links {wheelhouse}", "--require-hashes",
                       f"-r {PATHS['locks_dir']}/{found.host_name}"]  # fmt: skip
    # The build installs exactly environment.yml's pip section.
    assert pip == pip_section(packages_context(deployment))
    assert f"installer sha256 {deployment.miniforge_sha256}" in text
    assert "--no-index" not in render_env(online)
    # Offline is another environment; so is another installer (another Python).
    other = offline_deployment(python_version="3.12", miniforge_sha256=OTHER_INSTALLER)
    dirs = {env_dir(render_env(d)) for d in (online, deployment, other)}
    assert len(dirs) == 3


def test_the_offline_build_is_a_venv_of_the_installers_python_without_conda():
    script = conda.build_script("/opt/mlflow/envs/e1", offline_install=True)
    assert f"{PATHS['conda_root']}/bin/python -m venv /opt/mlflow/envs/e1;" in script
    assert (
        "-m pip install --quiet --disable-pip-version-check --no-compile "
        f"-r {PATHS['environment_requirements']}" in script
    )
    assert "conda env create" not in script and "touch /opt/mlflow/envs/e1/.kit-complete" in script
    online = conda.build_script("/opt/mlflow/envs/e1")
    assert "conda env create" in online and "venv" not in online


def test_the_offline_installer_runs_only_from_the_upload_checked_again():
    script = conda.offline_miniforge_script(offline_deployment(python_version="3.12"))
    assert "curl" not in script
    upload = PATHS["miniforge_upload"]
    assert (
        f"sha256sum -c --quiet -; bash {upload} -b -p {PATHS['conda_root']}; rm -f {upload}"
        in script
    )


# --------------------------------------------------------------------------- pip download, for real


def lock_slice(*names: str) -> lock.Lock:
    """The committed lock's entries for ``names`` (markers and hashes as they are)."""
    entries = lock.find("3.17.2").text.split("\n")
    keep, taking = [], False
    for line in entries:
        if line and not line.startswith(" "):
            taking = line.split("==")[0] in names
        if taking and not line.lstrip().startswith("#"):
            keep.append(line)
    return lock.Lock("slice.txt", "\n".join(keep) + "\n")


@pytest.mark.service
def test_the_wheelhouse_holds_the_hosts_wheels_checked_and_is_built_once(tmp_path, monkeypatch):
    """A CPU and Python this machine is not (aarch64, 3.12): the package index pip is
    configured with gives the host's wheels, each against the lock's hashes."""
    sliced = lock_slice("numpy", "packaging")
    target = linux("3.12.10", machine="aarch64", glibc=(2, 36))
    built = offline.wheelhouse(sliced, target, tmp_path)
    assert sorted(built.wheels) == [
        "numpy-2.5.5-cp312-cp312-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "packaging-26.4-py3-none-any.whl",
    ]
    for name, digest in built.wheels.items():
        assert hashlib.sha256((built.path / name).read_bytes()).hexdigest() == digest
        assert f"--hash=sha256:{digest}" in sliced.text
    assert built.path.name == f"slice.{sliced.sha256[:16]}-cp312-aarch64-glibc2.36"
    monkeypatch.setattr(offline.subprocess, "run", lambda *a, **k: pytest.fail("downloaded again"))
    assert offline.wheelhouse(sliced, target, tmp_path) == built


@pytest.mark.service
def test_a_wheel_the_lock_does_not_hash_stops_the_download_and_keeps_nothing(tmp_path):
    sliced = lock_slice("packaging")
    # Every file of it now has another sha256 than the lock says.
    bad = lock.Lock("bad.txt", re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, sliced.text))
    with pytest.raises(offline.OfflineError) as caught:
        offline.wheelhouse(bad, linux("3.12.10"), tmp_path)
    said = str(caught.value)
    assert "pip download" in said and "--require-hashes" in said
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in said
    assert list((tmp_path / "wheelhouse").iterdir()) == []


# --------------------------------------------------------------------------- fab offline-cache


def offline_cache(tmp_path, *options: str) -> subprocess.CompletedProcess:
    """``fab offline-cache`` as a user runs it, on settings whose installer is a local file."""
    installer = tmp_path / "Miniforge3-test.sh"
    installer.write_bytes(b"#!/bin/sh\nexit 0\n")
    settings = valid_settings(
        offline_install=True,
        offline_cache_dir=str(tmp_path / "cache"),
        miniforge_url=installer.as_uri(),
        miniforge_sha256=hashlib.sha256(installer.read_bytes()).hexdigest(),
    )
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    fab = offline.Path(sys.executable).with_name("fab")
    return subprocess.run([str(fab), "offline-cache", "--settings", str(path), *options],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip


@pytest.mark.service
def test_offline_cache_fetches_the_installer_and_the_wheels_a_bootstrap_then_finds(tmp_path):
    done = offline_cache(tmp_path)  # python_version 3.11 (not the default installer), x86_64
    assert done.returncode == 0, done.stderr
    found = lock.find(Deployment.mlflow_version)
    key = "cp311-x86_64-glibc2.36"
    house = tmp_path / "cache" / "wheelhouse" / f"mlflow-3.17.2.{found.sha256[:16]}-{key}"
    wanted = offline.requirements(found, linux("3.11.2"))
    assert f"wheelhouse {house} ({len(wanted)} wheels," in done.stdout
    assert len(list(house.glob("*.whl"))) == len(wanted)
    # What a bootstrap reads from a Debian 12 host with that Python is the same wheelhouse.
    assert offline.wheelhouse(found, linux("3.11.2"), tmp_path / "cache").path == house


@pytest.mark.parametrize(
    ("options", "said"),
    [(("--machine", "amd64"), "machine 'amd64': allowed: x86_64, aarch64"),
     (("--glibc", "musl"), "glibc 'musl': allowed: 2.N"),
     (("--python", "2.7"), "python '2.7': allowed: a CPython 3 version")],
)  # fmt: skip
def test_offline_cache_refuses_a_host_it_cannot_fetch_for_naming_the_option(
    tmp_path, options, said
):
    done = offline_cache(tmp_path, *options)
    assert done.returncode == 1 and said in done.stderr, done.stderr
    assert not (tmp_path / "cache" / "wheelhouse").exists()
