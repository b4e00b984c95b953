"""How the end-to-end tests copy a built environment between hosts, on plain directories
standing in for the hosts' root filesystems (unit tier)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.e2e.kit import BuiltEnvironments

ENV = "0123456789abcdef"


def a_host(root: Path, name: str, current: str | None = None):
    """A host whose servers run ``current`` (``readlink /opt/mlflow/current``)."""
    (root / "opt/mlflow/envs").mkdir(parents=True)
    (root / "var/tmp").mkdir(parents=True)
    link = f"/opt/mlflow/envs/{current}\n" if current else "\n"

    def ssh(command: str):
        assert command == "readlink /opt/mlflow/current", command
        return SimpleNamespace(stdout=link)

    return SimpleNamespace(name=name, rootfs=root, ssh=ssh)


def built(host, name: str, complete: bool = True) -> Path:
    env = host.rootfs / "opt/mlflow/envs" / name
    (env / "bin").mkdir(parents=True)
    (env / "bin/mlflow").write_text("#!/bin/sh\n")
    (env / "bin/mlflow").chmod(0o755)
    if complete:
        (env / ".kit-complete").touch()
    return env


def kept_from_a_host(tmp_path: Path, complete: bool = True) -> BuiltEnvironments:
    """A cache that was asked to keep, as "s3 new", the environment ENV a host runs."""
    (tmp_path / "cache").mkdir()
    cache = BuiltEnvironments(tmp_path / "cache", log=lambda _line: None)
    source = a_host(tmp_path / "a", "a", current=ENV)
    built(source, ENV, complete=complete)
    cache.keep("s3 new", source)
    return cache


def test_a_kept_environment_is_seeded_whole_with_its_modes_and_marker(tmp_path):
    cache = kept_from_a_host(tmp_path)
    target = a_host(tmp_path / "b", "b")

    assert cache.seed("s3 new", target) == ENV
    env = target.rootfs / "opt/mlflow/envs" / ENV
    assert (env / ".kit-complete").exists()
    assert (env / "bin/mlflow").stat().st_mode & 0o777 == 0o755
    assert list((target.rootfs / "var/tmp").iterdir()) == []  # renamed into place
    # What one host does to its copy (the failed-switch test breaks it) stays on that host.
    (env / "bin/mlflow").chmod(0o644)
    other = a_host(tmp_path / "c", "c")
    cache.seed("s3 new", other)
    assert (other.rootfs / "opt/mlflow/envs" / ENV / "bin/mlflow").stat().st_mode & 0o777 == 0o755


def test_nothing_is_seeded_for_another_key_or_over_an_existing_environment(tmp_path):
    cache = kept_from_a_host(tmp_path)
    target = a_host(tmp_path / "b", "b")

    assert cache.seed("gcs new", target) is None
    assert list((target.rootfs / "opt/mlflow/envs").iterdir()) == []
    own = built(target, ENV)
    (own / "own").touch()
    assert cache.seed("s3 new", target) == ENV
    assert (own / "own").exists()


def test_an_incomplete_environment_is_not_kept(tmp_path):
    cache = kept_from_a_host(tmp_path, complete=False)
    assert cache.seed("s3 new", a_host(tmp_path / "b", "b")) is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_what_one_worker_keeps_the_other_seeds_into_a_host_without_the_kits_directories(
    tmp_path,
):
    kept = kept_from_a_host(tmp_path)
    # The other worker of make test: its own instance on the same directory.
    other = BuiltEnvironments(tmp_path / "cache", log=lambda _line: None)
    assert other.name_of("s3 new") == ENV
    fresh = SimpleNamespace(name="fresh", rootfs=tmp_path / "fresh")
    (fresh.rootfs / "var/tmp").mkdir(parents=True)  # a host before its first bootstrap
    assert other.seed("s3 new", fresh) == ENV
    assert (fresh.rootfs / "opt/mlflow/envs" / ENV / ".kit-complete").exists()
    # Kept again under the same key, by either: nothing copied twice, the first one stays.
    kept.keep("s3 new", a_host(tmp_path / "d", "d", current="fedcba9876543210"))
    assert other.name_of("s3 new") == ENV
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [ENV, "keys"]


def test_a_worker_waits_while_the_other_builds_and_not_after_it_gave_up(tmp_path):
    import threading

    (tmp_path / "cache").mkdir()
    builder = BuiltEnvironments(tmp_path / "cache", log=lambda _line: None)
    waiter = BuiltEnvironments(tmp_path / "cache", log=lambda _line: None)
    assert waiter.wait_for("s3 new", timeout=60) is None  # nobody builds it: no wait
    builder.building("s3 new")
    source = a_host(tmp_path / "a", "a", current=ENV)
    built(source, ENV)
    done = threading.Timer(3, builder.keep, args=("s3 new", source))
    done.start()
    assert waiter.wait_for("s3 new", timeout=60) == ENV
    done.join()
    builder.building("s3 new", now=False)
    # A build that failed: its marker gone, nothing kept; the next one does not wait.
    builder.building("gcs new")
    builder.building("gcs new", now=False)
    assert waiter.wait_for("gcs new", timeout=60) is None
    # One still building after the wait's limit: built here instead.
    builder.building("gcs new")
    assert waiter.wait_for("gcs new", timeout=0.5) is None
