"""The kit's distribution for the server's environment: ``kit_artifacts.py`` (streaming
uploads to S3 and GCS), ``kit_downloads.py`` (streaming downloads) and ``kit_auth.py`` (user
changes listened for, loaded by kit_downloads' app; its trigger installed by mlflow-migrate)
and ``kit_asgi.py`` (MLflow's per-request middlewares skipped where they only pass a request
on, installed by the same app), with the package metadata that registers them.

MLflow finds artifact repositories by entry point (``mlflow.artifact_repository``), and an
entry point exists only in an installed distribution's ``entry_points.txt``. So the kit
builds a wheel here, byte for byte the same from the same module (fixed timestamps, sorted
members), and environment.yml names it by a version that carries the modules' sha256: a
changed module changes environment.yml, hence the environment's hash, hence a rebuild that
installs it (``provisioning.steps.conda``). A wheel needs no build backend on the VM.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODULE_FILES = tuple(
    Path(__file__).with_name(name)
    for name in ("kit_artifacts.py", "kit_downloads.py", "kit_auth.py", "kit_asgi.py")
)
DISTRIBUTION = "mlflow_kit_artifacts"
ENTRY_POINTS = (
    "[mlflow.app]\n"
    "kit-streaming = kit_downloads:create_app\n"
    "\n"
    "[mlflow.artifact_repository]\n"
    "gs = kit_artifacts:StreamingGCSArtifactRepository\n"
    "s3 = kit_artifacts:StreamingS3ArtifactRepository\n"
)
#: 1980-01-01, the earliest time a zip member can carry: the same bytes on every machine.
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes


def modules() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in MODULE_FILES}


def version() -> str:
    digest = hashlib.sha256()
    for name, data in modules().items():
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    return f"1.0+{digest.hexdigest()[:12]}"


def metadata_files() -> dict[str, bytes]:
    """The ``.dist-info`` files (all but RECORD), by name."""
    return {
        "METADATA": (
            f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version()}\n"
            "Summary: Streaming artifact uploads to S3 and GCS for the MLflow kit\n"
        ).encode(),
        "WHEEL": b"Wheel-Version: 1.0\nGenerator: mlflow-kit\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        "entry_points.txt": ENTRY_POINTS.encode(),
    }


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def wheel() -> Wheel:
    """The wheel pip installs into the server's environment."""
    info = f"{DISTRIBUTION}-{version()}.dist-info"
    members = modules()
    members.update({f"{info}/{name}": data for name, data in metadata_files().items()})
    record = "".join(_record_line(name, data) for name, data in sorted(members.items()))
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            member = zipfile.ZipInfo(name, _EPOCH)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, data)
    return Wheel(f"{DISTRIBUTION}-{version()}-py3-none-any.whl", buffer.getvalue())


def install_beside(directory: Path) -> Path:
    """Put the module and its ``.dist-info`` in ``directory`` (for a ``PYTHONPATH``), as
    an installed wheel would: how a test gives a server the entry points without
    installing anything into a shared environment."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in modules().items():
        (directory / name).write_bytes(data)
    info = directory / f"{DISTRIBUTION}-{version()}.dist-info"
    info.mkdir(exist_ok=True)
    for name, data in metadata_files().items():
        (info / name).write_bytes(data)
    return directory
