"""Every template rendered for one fixed deployment equals its reviewed copy in golden/.

A one-line edit of a security property (a widened ReadWritePaths, ProtectHome=no,
a cipher list, a restart policy) changes a rendered file, so it fails here even
where a bound (an exposure score under 2.0) would let it pass. After a deliberate
template change, review the diff and rewrite the copies with
``MLFLOW_KIT_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py``.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from provisioning.render import context, render
from provisioning.settings import Deployment
from tests.unit.conftest import valid_settings
from tests.unit.test_templates import exposure

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MLFLOW_KIT_UPDATE_GOLDEN") == "1"
FLASK_KEY = "0123456789abcdef" * 4
KEK = "kek-passphrase-" + "fedcba9876543210" * 3
#: auth oidc: sign-in through an OpenID Connect provider (provisioning/auth.py).
OIDC = {"auth": "oidc", "oidc_issuer": "https://login.example.com/realms/acme",
        "oidc_client_id": "mlflow", "oidc_client_secret": "client-secret-%-$HOME",
        "oidc_allowed_groups": ["mlflow-users", "data-science"], "oidc_admin_groups": ["mlflow-admins"]}  # fmt: skip
#: (golden file, template, deployment changes)
CASES = [
    ("mlflow-server@.service", "mlflow-server@.service.j2", {}),
    ("mlflow-migrate.service", "mlflow-migrate.service.j2", {}),
    ("mlflow.env", "mlflow.env.j2", {}),
    ("mlflow.env.direct", "mlflow.env.j2", {"artifact_mode": "direct"}),
    ("basic_auth.ini", "basic_auth.ini.j2", {}),
    ("environment.yml", "environment.yml.j2", {}),
    ("nginx-mlflow.conf", "nginx-mlflow.conf.j2", {}),
    ("nginx-upstream.conf", "nginx-upstream.conf.j2", {}),
    ("nginx-mlflow.conf.letsencrypt", "nginx-mlflow.conf.j2", {
        "tls_mode": "letsencrypt", "domain": "mlflow.example.com", "acme_email": "ops@example.com"}),
    ("certbot-deploy-hook.sh", "certbot-deploy-hook.sh.j2", {
        "tls_mode": "letsencrypt", "domain": "mlflow.example.com", "acme_email": "ops@example.com"}),
    ("mlflow.env.oidc", "mlflow.env.j2", OIDC),
    ("environment.yml.oidc", "environment.yml.j2", OIDC),
]  # fmt: skip
#: Exposure of each unit in ``systemd-analyze security --offline=yes`` (systemd 252).
EXPOSURE = {"mlflow-server@.service": "1.3", "mlflow-migrate.service": "1.3"}


def rendered(template: str, changes: dict) -> str:
    deployment = Deployment(**valid_settings(**changes))
    ctx = context(
        deployment,
        server_ports=[5001, 5002],
        flask_secret_key=FLASK_KEY,
        job_execution=False,
        kek_passphrase=KEK,
    )
    return render(template, ctx)


@pytest.mark.parametrize(("golden", "template", "changes"), CASES, ids=[c[0] for c in CASES])
def test_rendered_template_equals_its_reviewed_copy(golden, template, changes):
    text = rendered(template, changes)
    path = GOLDEN / golden
    if UPDATE:
        path.write_text(text)
    diff = "".join(
        difflib.unified_diff(
            path.read_text().splitlines(True), text.splitlines(True), str(path), "rendered"
        )
    )
    assert not diff, f"{golden} differs from its reviewed copy:\n{diff}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", sorted(EXPOSURE))
def test_unit_exposure_is_exactly_the_reviewed_score(tmp_path, unit):
    path = tmp_path / unit.replace("@.", "@5001.")
    path.write_text((GOLDEN / unit).read_text())
    assert f"{exposure(path):.1f}" == EXPOSURE[unit]
