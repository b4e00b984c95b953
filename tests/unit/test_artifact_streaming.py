"""Proxied artifact uploads stream into S3 (moto) and GCS (the emulator): a real MLflow
server with the kit's distribution (provisioning.artifact_streaming) on its PYTHONPATH,
watched while a 200 MiB artifact goes through it.

What the stand-ins do not: moto and the emulator answer from this machine (no 100 ms
round trips, so parts finish fast and the read-ahead bound is rarely reached); moto
accepts parts of any size (S3 refuses parts under 5 MiB but the last one). The bound on
memory comes from the part size and the read-ahead, not from the store's speed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from provisioning import artifact_streaming
from tests.localcloud.procs import free_port
from tests.localcloud.services import ARTIFACT_PREFIX, BUCKET, S3Server

pytestmark = pytest.mark.service  # two servers, 200 MiB each way: ~40 s

MIB = 1024 * 1024
ARTIFACT_BYTES = 200 * MIB
#: What the server may hold of it: the temporary directory must stay near empty, and its
#: memory grow by the parts held at once (kit_artifacts: about 50 MiB for S3, 48 for GCS),
#: not by the artifact: less than half of it.
TEMP_BOUND = 8 * MIB
RSS_GROWTH_BOUND = ARTIFACT_BYTES // 2


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def worker(pid: int) -> int:
    """The uvicorn process ``mlflow server`` starts: the one that holds the requests."""
    for each in descendants(pid):
        try:
            if b"uvicorn" in Path(f"/proc/{each}/cmdline").read_bytes():
                return each
        except OSError:
            continue
    raise AssertionError(f"no uvicorn process under {pid}")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def temp_bytes(directory: Path) -> int:
    total = 0
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class Sampler(threading.Thread):
    """Peaks of the server's temporary files and memory, every 50 ms until stopped."""

    def __init__(self, pid: int, tmpdir: Path):
        super().__init__(daemon=True)
        self.pid, self.tmpdir = pid, tmpdir
        self.rss_before = rss_bytes(pid)
        self.temp_peak = self.rss_peak = self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.temp_peak = max(self.temp_peak, temp_bytes(self.tmpdir))
            try:
                self.rss_peak = max(self.rss_peak, rss_bytes(self.pid))
            except OSError:  # the worker is gone: the request fails and says so
                return
            self.samples += 1
            self.done.wait(0.05)

    def stop(self) -> None:
        self.done.set()
        self.join()


def start_server(tmp_path: Path, destination: str, env: dict[str, str], options=()):
    """``mlflow server`` as the unit runs it (uvicorn, one worker), the kit's distribution
    on its PYTHONPATH and its TMPDIR a directory of its own."""
    plugin = artifact_streaming.install_beside(tmp_path / "plugin")
    tmpdir = tmp_path / "server-tmp"
    tmpdir.mkdir()
    port = free_port("127.0.0.1")
    log = (tmp_path / "server.log").open("w")
    server_env = {
        **os.environ,
        **env,
        "TMPDIR": str(tmpdir),
        # No job runner processes: they start and grow beside the server for a minute.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--artifacts-destination", destination, "--serve-artifacts", *options,
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=server_env,
    )  # fmt: skip
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return process, port, tmpdir
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise AssertionError(f"mlflow server never answered /health: {(tmp_path / 'server.log')}")


def put_artifact(port: int, path: str, size: int) -> str:
    """PUT ``size`` pseudo-random bytes as the MLflow client does (a Content-Length, the
    body sent as it is read); the body's sha256."""
    digest = hashlib.sha256()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.putrequest("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}")
    connection.putheader("Content-Length", str(size))
    connection.endheaders()
    seed, sent = hashlib.sha256(b"artifact").digest(), 0
    while sent < size:
        seed = hashlib.sha256(seed).digest()
        chunk = (seed * (MIB // len(seed)))[: min(MIB, size - sent)]
        chunk = bytes(b ^ (sent >> 20 & 0xFF) for b in chunk[:64]) + chunk[64:]
        digest.update(chunk)
        connection.send(chunk)
        sent += len(chunk)
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    assert answer.status == 200, body[:500]
    return digest.hexdigest()


def upload_watched(tmp_path: Path, destination: str, env: dict[str, str]):
    process, port, tmpdir = start_server(tmp_path, destination, env)
    try:
        # A first, small upload: the storage client's imports and connection pool are not
        # what is measured.
        put_artifact(port, "0/big/warm-up.bin", 20 * MIB)
        sampler = Sampler(worker(process.pid), tmpdir)
        sampler.start()
        try:
            sent = put_artifact(port, "0/big/model.bin", ARTIFACT_BYTES)
        finally:
            sampler.stop()
        return sent, sampler
    finally:
        process.terminate()
        process.wait(timeout=30)


def report(name: str, sampler: Sampler) -> None:
    print(
        f"{name}: temp peak {sampler.temp_peak / MIB:.1f} MiB, server RSS "
        f"{sampler.rss_before / MIB:.0f} -> {sampler.rss_peak / MIB:.0f} MiB, "
        f"{sampler.samples} samples"
    )


def assert_bounded(sampler: Sampler) -> None:
    assert sampler.samples > 10, "the upload ended before the server could be watched"
    assert sampler.temp_peak < TEMP_BOUND, f"{sampler.temp_peak} bytes in the server's TMPDIR"
    growth = sampler.rss_peak - sampler.rss_before
    assert growth < RSS_GROWTH_BOUND, f"server memory grew by {growth / MIB:.0f} MiB"


@pytest.fixture
def s3(tmp_path):
    server = S3Server("127.0.0.1", tmp_path, tied=True)
    server.start()
    yield server
    server.stop()


def test_an_upload_to_s3_streams_through_the_server(s3, tmp_path):
    env = {
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    sent, sampler = upload_watched(tmp_path, f"s3://{BUCKET}/{ARTIFACT_PREFIX}", env)
    report("s3", sampler)
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{ARTIFACT_PREFIX}/0/big/model.bin")["Body"]
    stored = hashlib.sha256()
    for chunk in body.iter_chunks(MIB):
        stored.update(chunk)
    assert stored.hexdigest() == sent
    assert_bounded(sampler)


def test_an_upload_to_gcs_streams_through_the_server(gcs, tmp_path):
    env = {"STORAGE_EMULATOR_HOST": gcs.endpoint}
    sent, sampler = upload_watched(tmp_path, f"gs://{BUCKET}/{ARTIFACT_PREFIX}", env)
    report("gcs", sampler)
    blob = gcs.client().bucket(BUCKET).blob(f"{ARTIFACT_PREFIX}/0/big/model.bin")
    stored = hashlib.sha256()
    with blob.open("rb", chunk_size=4 * MIB) as stream:
        while chunk := stream.read(MIB):
            stored.update(chunk)
    assert stored.hexdigest() == sent
    assert_bounded(sampler)


# --------------------------------------------------------------------------- downloads

ADMIN = ("admin", "streaming-test-password-1")
#: The store's answers are held back after this much, until the client has its first bytes.
HOLD_AFTER = 32 * MIB


class GateProxy(threading.Thread):
    """A TCP proxy between the server and the store that forwards the store's answers up to
    ``HOLD_AFTER`` bytes, then holds them until ``release`` is set: a server that fetches
    the whole object before it answers cannot answer while they are held."""

    def __init__(self, upstream: str):
        super().__init__(daemon=True)
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarded = 0
        self.release = threading.Event()
        self.gave_up = False
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            store = socket.create_connection(self.upstream)
            threading.Thread(target=self.pipe, args=(client, store, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(store, client, True), daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(256 * 1024):
                if answers:
                    with self.lock:
                        self.forwarded += len(data)
                        held = self.forwarded > HOLD_AFTER
                    # Not a timing bound: a server that does not answer while the store's
                    # answer is held fails on the order of events, once the proxy gives up.
                    if held and not self.release.wait(60):
                        self.gave_up = True
                        self.release.set()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for each in (source, sink):
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.release.set()
        self.listener.close()


def write_artifact(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, MIB):
            chunk = hashlib.sha256(offset.to_bytes(8, "big")).digest() * (MIB // 32)
            chunk = chunk[: min(MIB, size - offset)]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def download_watched(tmp_path: Path, destination: str, env: dict[str, str], proxy: GateProxy):
    """GET the artifact from a server running the app ``kit-streaming`` over basic-auth."""
    proxy.start()
    auth_env = {
        **env,
        "MLFLOW_KIT_AUTH_APP": "basic-auth",
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "streaming-test-secret-key",
    }
    process, port, tmpdir = start_server(
        tmp_path, destination, auth_env, ["--app-name", "kit-streaming"]
    )
    path = "/api/2.0/mlflow-artifacts/artifacts/0/big/model.bin"
    try:
        anonymous = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        anonymous.request("GET", path)
        refused = anonymous.getresponse()
        anonymous.close()  # not read: if it was let through, its body is not wanted
        sampler = Sampler(worker(process.pid), tmpdir)
        sampler.start()
        token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("GET", path, headers={"Authorization": f"Basic {token}"})
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()[:500]
        received = hashlib.sha256()
        first = answer.read(MIB)
        gave_up_at_first_byte = proxy.gave_up
        forwarded_at_first_byte = proxy.forwarded
        proxy.release.set()
        received.update(first)
        while chunk := answer.read(MIB):
            received.update(chunk)
        sampler.stop()
        return (
            refused.status,
            received.hexdigest(),
            forwarded_at_first_byte,
            gave_up_at_first_byte,
            sampler,
        )
    finally:
        proxy.close()
        process.terminate()
        process.wait(timeout=30)


def assert_streamed(refused, received, expected, forwarded, gave_up, sampler) -> None:
    print(f"  first bytes after {forwarded / MIB:.1f} MiB of {ARTIFACT_BYTES / MIB:.0f} fetched")
    assert refused == 401, "the permission middleware no longer guards the download"
    assert received == expected
    # The client had its first bytes while the store's answer was still held back.
    assert not gave_up, "the client's first bytes came only after the proxy stopped holding"
    assert forwarded < ARTIFACT_BYTES, f"the server fetched {forwarded} bytes before answering"
    assert sampler.temp_peak < TEMP_BOUND, f"{sampler.temp_peak} bytes in the server's TMPDIR"


def test_a_download_from_s3_streams_through_the_server(s3, tmp_path):
    expected = write_artifact(tmp_path / "model.bin", ARTIFACT_BYTES)
    s3.client().upload_file(
        str(tmp_path / "model.bin"), BUCKET, f"{ARTIFACT_PREFIX}/0/big/model.bin"
    )
    (tmp_path / "model.bin").unlink()
    proxy = GateProxy(s3.endpoint)
    env = {
        "MLFLOW_S3_ENDPOINT_URL": proxy.endpoint,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    *seen, sampler = download_watched(tmp_path, f"s3://{BUCKET}/{ARTIFACT_PREFIX}", env, proxy)
    report("s3 download", sampler)
    assert_streamed(seen[0], seen[1], expected, seen[2], seen[3], sampler)


def test_a_download_from_gcs_streams_through_the_server(gcs, tmp_path):
    expected = write_artifact(tmp_path / "model.bin", ARTIFACT_BYTES)
    blob = gcs.client().bucket(BUCKET).blob(f"{ARTIFACT_PREFIX}/0/big/model.bin")
    blob.upload_from_filename(str(tmp_path / "model.bin"))
    (tmp_path / "model.bin").unlink()
    proxy = GateProxy(gcs.endpoint)
    env = {"STORAGE_EMULATOR_HOST": proxy.endpoint}
    *seen, sampler = download_watched(tmp_path, f"gs://{BUCKET}/{ARTIFACT_PREFIX}", env, proxy)
    report("gcs download", sampler)
    assert_streamed(seen[0], seen[1], expected, seen[2], seen[3], sampler)
