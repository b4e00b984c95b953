"""The gc and metrics units: rendered as reviewed (golden/), verified by systemd-analyze,
hardened like the server's (exposure under 2.0)."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.layout import FILES, PATHS
from provisioning.render import context, render
from provisioning.settings import Deployment
from tests.unit.conftest import valid_settings
from tests.unit.test_templates import exposure

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MLFLOW_KIT_UPDATE_GOLDEN") == "1"
UNITS = {
    "mlflow-gc.service.j2": "mlflow-gc.service",
    "mlflow-gc.timer.j2": "mlflow-gc.timer",
    "mlflow-metrics.service.j2": "mlflow-metrics.service",
}
needs_systemd_analyze = pytest.mark.skipif(
    not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed"
)


def ctx_for(**changes) -> dict:
    return context(
        Deployment(**valid_settings(**changes)),
        server_ports=[5001, 5002],
        flask_secret_key="0123456789abcdef" * 4,
        job_execution=False,
        kek_passphrase="kek-passphrase-" + "fedcba9876543210" * 3,
    )


@pytest.mark.parametrize("template", UNITS)
def test_rendered_unit_equals_its_reviewed_copy(template):
    path = GOLDEN / UNITS[template]
    text = render(template, ctx_for())
    if UPDATE or not path.exists():
        path.write_text(text)
    diff = "".join(difflib.unified_diff(path.read_text().splitlines(True), text.splitlines(True)))
    assert not diff, f"{path.name} differs from its reviewed copy:\n{diff}"


def test_gc_settings_reach_the_units():
    ctx = ctx_for(gc_older_than="12h", gc_schedule="*-*-* 03:30:00")
    service = render("mlflow-gc.service.j2", ctx)
    assert "Environment=MLFLOW_KIT_GC_OLDER_THAN=12h\n" in service
    assert f"ExecStart={PATHS['current_env']}/bin/python {PATHS['gc_program']}\n" in service
    assert "Type=oneshot" in service and "\n[Install]" not in service
    assert "OnCalendar=*-*-* 03:30:00\n" in render("mlflow-gc.timer.j2", ctx)


def test_metrics_cidrs_are_allowed_and_everyone_else_needs_the_admin():
    site = render("nginx-mlflow.conf.j2", ctx_for(metrics_allowed_cidrs=["10.0.0.0/8"]))
    block = site.split("location = /metrics {")[1].split("}")[0]
    assert "satisfy any;" in block and "allow 10.0.0.0/8;" in block and "deny all;" in block
    assert "auth_request /kit-auth/admin;" in block
    auth = site.split("location = /kit-auth/admin {")[1].split("}")[0]
    assert "internal;" in auth and "users/get?username=admin;" in auth


@pytest.fixture
def unit_root(tmp_path) -> Path:
    if not Path("/usr/lib/systemd/system/multi-user.target").exists():
        pytest.skip("no systemd unit files on this machine")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True,
                    ignore_dangling_symlinks=True)  # fmt: skip
    (root / "etc/systemd/system").mkdir(parents=True)
    python = root / PATHS["current_env"].lstrip("/") / "bin/python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    for template in UNITS:
        (root / FILES[template].path.lstrip("/")).write_text(render(template, ctx_for()))
    return root


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS.values())
def test_units_pass_systemd_analyze_verify(unit_root, unit):
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={unit_root}", "--man=no", unit],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (result.returncode, (result.stdout + result.stderr).strip()) == (0, "")


@needs_systemd_analyze
@pytest.mark.parametrize("template", ["mlflow-gc.service.j2", "mlflow-metrics.service.j2"])
def test_services_score_under_2_in_systemd_analyze_security(tmp_path, template):
    path = tmp_path / UNITS[template]
    path.write_text(render(template, ctx_for()))
    assert exposure(path) < 2.0


@needs_systemd_analyze
def test_a_bad_schedule_fails_verification(unit_root):
    timer = unit_root / FILES["mlflow-gc.timer.j2"].path.lstrip("/")
    timer.write_text(render("mlflow-gc.timer.j2", ctx_for(gc_schedule="every tuesday")))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={unit_root}", "--man=no", "mlflow-gc.timer"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "every tuesday" in result.stdout + result.stderr
