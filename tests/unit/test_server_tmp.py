"""The servers' temporary directory (server_tmp_dir): the unit's TMPDIR and its clean-up run
for real on a real directory, and preflight's free-space check run with real ``df``.

What the unit's commands get here and not from systemd (systemd.service(5), systemd.exec(5)):
they run as the test's user, not as User=mlflow inside ProtectSystem=strict (the unit's
ReadWritePaths= is asserted below and ``systemd-analyze verify`` reads the unit in
test_templates); the command lines are split by shlex, which agrees with systemd's splitting
for these plain words (no quotes, no prefixes, no specifier but %i: asserted).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning import facts, transport
from provisioning.render import render
from provisioning.settings import Deployment
from provisioning.steps import preflight
from tests.unit.conftest import valid_settings
from tests.unit.test_templates import make_context

UNIT = "mlflow-server@.service.j2"


def unit_lines(text: str, key: str) -> list[str]:
    return [
        line.removeprefix(f"{key}=") for line in text.splitlines() if line.startswith(f"{key}=")
    ]


def commands(text: str, key: str, port: int) -> list[list[str]]:
    """The unit's ``key`` commands for instance ``port``, as systemd would split them."""
    found = []
    for line in unit_lines(text, key):
        assert line[0] == "/" and "%" not in line.replace("%i", "") and "'" not in line, line
        found.append(shlex.split(line.replace("%i", str(port))))
    return found


def run_unit(text: str, key: str, port: int) -> None:
    for argv in commands(text, key, port):
        subprocess.run(argv, check=True, capture_output=True)


def tmpdir_of(text: str, port: int) -> str:
    (value,) = [v for v in unit_lines(text, "Environment") if v.startswith("TMPDIR=")]
    return value.removeprefix("TMPDIR=").replace("%i", str(port))


@pytest.mark.parametrize("path", ["/var/lib/mlflow/tmp", "/mnt/scratch/mlflow"])
def test_the_unit_gives_each_instance_its_own_tmpdir_inside_server_tmp_dir(path):
    unit = render(UNIT, make_context(Deployment(**valid_settings(server_tmp_dir=path))))
    assert tmpdir_of(unit, 5001) == f"{path}/5001"
    # ProtectSystem=strict: only ReadWritePaths= are writable, and the default is below the
    # home the hardening already opens, a data disk's directory is not.
    assert "ProtectSystem=strict" in unit and path in unit_lines(unit, "ReadWritePaths")
    assert commands(unit, "ExecStartPre", 5001) == [
        ["/usr/bin/rm", "-rf", f"{path}/5001"],
        ["/usr/bin/mkdir", "-m", "0700", f"{path}/5001"],
    ]
    assert commands(unit, "ExecStopPost", 5001) == [["/usr/bin/rm", "-rf", f"{path}/5001"]]


def test_a_killed_instance_s_files_go_at_its_next_start_and_no_other_s(tmp_path):
    """Bootstrap's directory, two instances writing through Python's tempfile (as MLflow's
    artifact handlers do), one killed: its restart empties its own directory only, and a
    stop removes the stopped one's."""
    ctx = make_context(Deployment(**valid_settings()))
    root = tmp_path / "server-tmp"
    root.mkdir(mode=0o700)
    unit = render(UNIT, {**ctx, "server_tmp_dir": str(root)})

    def write_like_mlflow(port: int) -> Path:
        run_unit(unit, "ExecStartPre", port)
        script = (
            "import tempfile; d = tempfile.mkdtemp(); "
            "open(d + '/model.bin', 'wb').write(b'x' * 4096); print(d)"
        )
        env = {**os.environ, "TMPDIR": tmpdir_of(unit, port)}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        return Path(out.stdout.strip()) / "model.bin"

    left_by_5001, held_by_5002 = write_like_mlflow(5001), write_like_mlflow(5002)
    assert left_by_5001.parent.parent == root / "5001" and left_by_5001.stat().st_size == 4096
    assert stat.S_IMODE((root / "5001").stat().st_mode) == 0o700

    run_unit(unit, "ExecStartPre", 5001)  # 5001 killed, restarted by systemd
    assert list((root / "5001").iterdir()) == [] and held_by_5002.exists()
    run_unit(unit, "ExecStartPre", 5001)  # and again: nothing to remove is no failure
    run_unit(unit, "ExecStopPost", 5002)
    assert sorted(p.name for p in root.iterdir()) == ["5001"]
    run_unit(unit, "ExecStopPost", 5002)  # a stop after a failed start: nothing left either


# --------------------------------------------------------------------------- preflight, real df


@dataclass
class LocalResult:
    stdout: str
    stderr: str
    exited: int


@dataclass
class LocalConnection:
    """Runs a Host's commands on this machine with ``sh -c``, as the test's user: no ``sudo``
    (the real host reads this fact as root, which sees at least what this user sees)."""

    host: str = "203.0.113.10"
    user: str = "admin"

    def run(self, command: str, **_kwargs) -> LocalResult:
        words = shlex.split(command)
        if words[:2] == ["sudo", "-n"]:
            assert words[-3:-1] == ["sh", "-c"], command
            command = words[-1]
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        return LocalResult(done.stdout, done.stderr, done.returncode)


def measured_by_python(path: Path) -> tuple[int, str]:
    """Free kB for an unprivileged user (df's Available) and the mount point, by statvfs."""
    vfs = os.statvfs(path)
    mount = path
    while not os.path.ismount(mount):
        mount = mount.parent
    return vfs.f_bavail * vfs.f_frsize // 1024, str(mount)


def test_free_space_reads_df_where_the_directory_is_or_will_be(tmp_path):
    host = transport.Host(LocalConnection(), step="preflight")
    for path in (tmp_path, tmp_path / "not" / "created"):
        space = host.read(facts.free_space(str(path)))
        free_kb, mount = measured_by_python(tmp_path)
        assert space.measured == str(tmp_path) and space.mount == mount
        # Others write on this disk meanwhile: a few MB either way.
        assert abs(space.free_kb - free_kb) < 64 * 1024, (space, free_kb)


def test_preflight_passes_with_room_and_refuses_without_naming_what_it_measured(tmp_path):
    host = transport.Host(LocalConnection(), step="preflight")
    path = str(tmp_path / "mlflow-tmp")
    free_gib = measured_by_python(tmp_path)[0] / (1024 * 1024)
    if free_gib < 1.1:
        pytest.skip(f"only {free_gib:.1f} GiB free on this machine's {tmp_path}")

    assert preflight.tmp_space(host, path, math.floor(free_gib)).measured == str(tmp_path)
    short = math.floor(free_gib) + 1
    with pytest.raises(transport.PreflightError) as refused:
        preflight.tmp_space(host, path, short)
    message = str(refused.value)
    mount = measured_by_python(tmp_path)[1]
    shown = re.fullmatch(
        rf"\[203\.0\.113\.10\] server_tmp_dir {path} \(not there yet, measured at {tmp_path}\): "
        rf"only (\d+\.\d) GiB free on {mount}, server_tmp_min_free_gib is {short} \(.*",
        message,
    )
    assert shown, message
    assert abs(float(shown.group(1)) - free_gib) <= 0.2
