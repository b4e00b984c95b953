"""The server's own secrets: the Flask session key and the KEK of MLflow's secret store.

Each is taken from the settings when they give it (several hosts sharing one
server need the same), else generated on the host once and kept there (0600,
never printed, never on a command line). MLflow encrypts AI Gateway secrets
(provider API keys) under the KEK; without one it uses a passphrase every MLflow
installation shares.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from provisioning import facts, files
from provisioning.layout import GROUP, MIGRATE_UNIT_NAME, PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.steps import servers
from provisioning.transport import Host

#: The passphrase MLflow falls back to without MLFLOW_CRYPTO_KEK_PASSPHRASE
#: (mlflow/utils/crypto.py, DEFAULT_KEK_PASSPHRASE): public, shared by every installation.
MLFLOW_DEFAULT_KEK = "mlflow-default-kek-passphrase-for-development-only"


@dataclass(frozen=True)
class ServerSecrets:
    flask_key: str
    kek_passphrase: str
    kek_version: int


def server_secrets(host: Host, deployment: Deployment) -> Outcome[ServerSecrets]:
    """The Flask key and the KEK, from the settings or kept on the host (generated once).

    A KEK generated for a server that already ran with MLflow's default passphrase
    comes with a rotation request, which the migration carries out (the gateway
    secrets' keys re-wrapped from the default passphrase to the new one).
    """
    notes = []
    flask = host.read(facts.file_text(PATHS["flask_key"]))
    if deployment.flask_secret_key is not None:
        flask = deployment.flask_secret_key.reveal()
    elif not flask:
        flask = secrets.token_hex(32)
        notes.append("Flask key generated")
    if _keep(host, PATHS["flask_key"], flask):
        notes.append("Flask key installed")

    version, _, kek = host.read(facts.file_text(PATHS["kek"])).partition(" ")
    given = deployment.kek_passphrase.reveal() if deployment.kek_passphrase else None
    if kek and given and given != kek:
        raise host.error(
            "server secrets",
            1,
            "the kek_passphrase setting differs from the KEK the server uses: the gateway "
            "secrets are encrypted under the server's; change it with `fab rotate-kek`",
        )
    if not kek:
        kek = given or secrets.token_urlsafe(48)
        # A server that already ran used MLflow's default passphrase: re-wrap to this one.
        if host.read(facts.exists(f"{PATHS['current_env']}/bin/python")):
            request_rotation(host, MLFLOW_DEFAULT_KEK, 1, kek)
            version = "2"
            notes.append("KEK generated, replacing MLflow's default passphrase")
        else:
            version = "1"
            notes.append("KEK generated")
        _keep(host, PATHS["kek"], f"{version} {kek}")
    value = ServerSecrets(flask, kek, int(version))
    if notes:
        return changed(", ".join(notes), value)
    return unchanged("Flask key and KEK kept on the host", value)


def _keep(host: Host, path: str, content: str) -> bool:
    return files.ensure_file(host, path, content, mode="0600", owner=USER, group=GROUP)


def request_rotation(host: Host, old: str, old_version: int, new: str) -> None:
    """Ask the next migration to re-wrap the gateway secrets' keys from ``old`` to ``new``."""
    request = json.dumps({"old": old, "old_version": old_version, "new": new})
    _keep(host, PATHS["kek_request"], request)


def rotate_kek(host: Host) -> Outcome[None]:
    """A new KEK: the servers stopped (MLflow's rotation requires it), the gateway secrets'
    keys re-wrapped by MLflow's own rotation, the new KEK kept. The bootstrap that follows
    gives it to the servers and starts them."""
    version, _, old = host.read(facts.file_text(PATHS["kek"])).partition(" ")
    if not old:
        raise host.error("rotate KEK", 1, f"no KEK in {PATHS['kek']}: run fab bootstrap first")
    new = secrets.token_urlsafe(48)
    instances = sorted(host.read(facts.INSTANCES))
    units = " ".join(servers.unit(port) for port in instances)
    host.note(f"stopping {len(instances)} instance(s) for the rotation")
    if units:
        host.run(f"systemctl stop {units}")
    request_rotation(host, old, int(version), new)
    result = host.run(f"systemctl start {MIGRATE_UNIT_NAME}", check=False, timeout=3600)
    if result.exited != 0 or host.read(facts.exists(PATHS["kek_request"])):
        host.run(f"rm -f {PATHS['kek_request']}")
        if units:
            host.run(f"systemctl start {units}")
        journal = host.read(facts.journal(f"-u {MIGRATE_UNIT_NAME}", 40, "cat"))
        raise host.error("mlflow crypto rotate-kek", result.exited or 1, journal)
    _keep(host, PATHS["kek"], f"{int(version) + 1} {new}")
    return changed(f"KEK version {int(version) + 1}; the servers start with it next")
