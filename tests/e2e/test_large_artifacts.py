"""A 2 GB artifact through the proxy, up and back, on each artifact backend.

What a user notices: the file that comes back is the file sent (sha256), the run lists it
at its full size, and the VM's disk never holds it on the way: the servers' temporary
space (server_tmp_dir, nginx's) stays within the streaming bound for the whole transfer.
Uploads stream (the kit's S3 / GCS repositories) and so do downloads (``stream_downloads``,
on by default with basic auth). The client keeps to the proxy's path as the README's
"Large artifacts: client settings" says (no presigned multipart straight to the bucket).

Stand-ins: moto and the GCS emulator on this machine (README: Tests). What the real
services do that they do not is in tests/localcloud/services.py; here it matters that
moto assembles a multipart upload in memory (about 4.5x the object at completion, one
measurement: 2.3 GB for 512 MB), so the size can be lowered with
MLFLOW_KIT_E2E_LARGE_ARTIFACT_MB on a machine with less than ~12 GB free.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from tests.e2e.kit import remove_objects_under
from tests.localcloud.services import ARTIFACT_PREFIX

pytestmark = pytest.mark.e2e

MB = 1024**2
#: 2 GiB through the proxy on each backend. (The GCS emulator's own upload cost grew with
#: the square of the object, 110 s for 1 GiB; the local cloud's appends in place:
#: tests/localcloud/gcs_emulator.py.)
SIZE_MB = 2048
#: The streaming bound: S3 sends 4 parts of 8 MiB at once, GCS one 16 MiB chunk, a
#: streamed download reads 1 MiB at a time; all in memory. Nothing should reach the disk.
BOUND = 64 * MB
#: Sampled as root every 0.5 s: the bytes under the servers' temporary directory and
#: nginx's (request and proxy buffers), each directory on its own line's total.
SAMPLER = r"""
i=0
while [ $i -lt {limit} ]; do
  du -sb {tmp} /var/lib/nginx 2>/dev/null | awk '{{s += $1}} END {{print s + 0}}'
  i=$((i + 1)); sleep 0.5
done
"""


class TempSpace:
    """One SSH session printing the host's temporary bytes every 0.5 s, for at most
    ``seconds``; the peak and the number of samples since the last ``reset``."""

    def __init__(self, host, tmp_dir: str, seconds: int = 3600):
        script = SAMPLER.format(limit=seconds * 2, tmp=tmp_dir)
        self.proc = subprocess.Popen([*host.ssh_argv(), "sudo sh -s"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.proc.stdin.write(script)
        self.proc.stdin.close()
        self.samples: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while len(self.samples) < 2:
            assert time.monotonic() < deadline and self.proc.poll() is None, "no samples"
            time.sleep(0.2)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.samples.append(int(line))

    def window(self) -> list[int]:
        """The samples since the previous call."""
        taken, self.samples = self.samples, []
        return taken

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for _ in range(size // MB):
            block = os.urandom(MB)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MB):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("deployed", ["s3", "gcs"], indirect=True)
def test_a_gigabytes_artifact_goes_through_the_proxy_both_ways_and_never_onto_the_vms_disk(
    deployed, client_env, monkeypatch, tmp_path
):
    """On the session's host (it changes nothing there but a run of its own, deleted with its
    objects at the end)."""
    host, backend = deployed["host"], deployed["backend"]
    size = int(os.environ.get("MLFLOW_KIT_E2E_LARGE_ARTIFACT_MB", SIZE_MB)) * MB
    unit = host.ssh("sudo systemctl show -p Environment -p ExecStart mlflow-server@5001").stdout
    assert "TMPDIR=/var/lib/mlflow/tmp/5001" in unit, unit  # where MLflow's temp files go
    assert "--app-name kit-streaming" in unit, unit  # downloads stream by default
    # The proxy's own data path, as the README tells users with clients that cannot (or
    # should not) reach the bucket: these win over what /server-info advertises.
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3600")

    source = tmp_path / "weights.bin"
    back = tmp_path / "back"
    space = TempSpace(host, "/var/lib/mlflow/tmp")
    client, run, removed = MlflowClient(), None, 0
    try:
        sent = random_file(source, size)
        run = client.create_run(client.create_experiment(f"large-{backend}"))
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied
        space.window()
        started = time.monotonic()
        client.log_artifact(run.info.run_id, str(source), "model")
        up_seconds, up = time.monotonic() - started, space.window()
        listed = {f.path: f.file_size for f in client.list_artifacts(run.info.run_id, "model")}
        assert listed == {"model/weights.bin": size}
        source.unlink()  # only one copy on this machine's disk at a time

        started = time.monotonic()
        got = Path(download_artifacts(run_id=run.info.run_id, artifact_path="model/weights.bin",
                                      dst_path=str(back)))  # fmt: skip
        down_seconds, down = time.monotonic() - started, space.window()
        assert got.stat().st_size == size
        assert sha256(got) == sent
    finally:
        space.stop()
        if run is not None:
            client.delete_run(run.info.run_id)
            # So no later backup of the backend's prefix (the upgrade tests take some)
            # copies gigabytes, and moto gives the memory back.
            under = f"{ARTIFACT_PREFIX}/{run.info.experiment_id}/{run.info.run_id}/"
            removed = remove_objects_under(deployed, under)
        source.unlink(missing_ok=True)
        for leftover in back.rglob("*"):
            if leftover.is_file():
                leftover.unlink()
    assert removed == 1  # the artifact was where the run's URI says, and is gone
    # Sampled throughout (a transfer of this size takes seconds, not a sample's 0.5 s).
    assert len(up) >= 4 and len(down) >= 4, (len(up), len(down))
    assert max(up) < BOUND, f"upload: {max(up) / MB:.0f} MB in temp space"
    assert max(down) < BOUND, f"download: {max(down) / MB:.0f} MB in temp space"
    print(f"{backend}: {size // MB} MB up {up_seconds:.0f} s "
          f"({size / MB / up_seconds:.0f} MB/s), down {down_seconds:.0f} s "
          f"({size / MB / down_seconds:.0f} MB/s); temp peak {max(up + down) / MB:.1f} MB")  # fmt: skip
