"""The kit's distribution for the server's environment (provisioning.artifact_streaming):
a wheel pip installs, whose entry points replace MLflow's S3 and GCS repositories and add
the app ``kit-streaming``, named
in environment.yml by its content, and uploaded before the environment is built."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
import zipfile
from io import BytesIO

import pytest

from provisioning import artifact_streaming
from provisioning.artifact_streaming.kit_artifacts import ExactReader, ReadAhead
from provisioning.steps import conda
from provisioning.transport import Host
from tests.unit.double import ScriptedConnection

REGISTRY = (
    "from mlflow.store.artifact.artifact_repository_registry import "
    "get_registered_artifact_repositories as r; "
    "from mlflow.server import _find_app; "
    "print(r()['s3'].__name__, r()['gs'].__name__); print(_find_app('kit-streaming'))"
)


def test_the_wheel_installs_with_pip_and_replaces_the_s3_and_gs_repositories(tmp_path):
    wheel = artifact_streaming.wheel()
    (tmp_path / wheel.filename).write_bytes(wheel.data)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(tmp_path / wheel.filename)],
        check=True, capture_output=True,
    )  # fmt: skip
    found = subprocess.run(
        [sys.executable, "-c", REGISTRY],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == [
        "StreamingS3ArtifactRepository",
        "StreamingGCSArtifactRepository",
        "kit_downloads:create_app",
    ]


def test_without_it_mlflow_s_own_repositories_serve(tmp_path):
    found = subprocess.run(
        [sys.executable, "-c", REGISTRY.rsplit(";", 1)[0]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == ["S3ArtifactRepository", "GCSArtifactRepository"]


def test_the_wheel_is_the_same_bytes_every_time_and_its_name_follows_the_module(
    tmp_path, monkeypatch
):
    first, again = artifact_streaming.wheel(), artifact_streaming.wheel()
    assert first == again
    with zipfile.ZipFile(BytesIO(first.data)) as archive:
        for path in artifact_streaming.MODULE_FILES:
            assert archive.read(path.name) == path.read_bytes()
    downloads = artifact_streaming.MODULE_FILES[1]
    changed = tmp_path / downloads.name
    changed.write_bytes(downloads.read_bytes() + b"# changed\n")
    monkeypatch.setattr(
        artifact_streaming, "MODULE_FILES", (artifact_streaming.MODULE_FILES[0], changed)
    )
    assert artifact_streaming.wheel().filename != first.filename


def wheel_state_read(path: str) -> str:
    return f"# if [ -e {path} ]; then stat -c '%a %U %G' {path} && sha256sum {path}; else echo missing; fi"


def test_the_step_uploads_the_wheel_once():
    wheel = artifact_streaming.wheel()
    path = f"/opt/mlflow/wheels/{wheel.filename}"
    sha = hashlib.sha256(wheel.data).hexdigest()
    conn = ScriptedConnection(
        [
            {"run": wheel_state_read(path), "stdout": "missing\n"},
            {"run": "$ mktemp -d", "stdout": "/tmp/tmp.x\n"},
            {"put": "/tmp/tmp.x/upload", "sha256": sha},
            {
                "run": f"# install -D -m 0644 -o root -g root /tmp/tmp.x/upload {path}.kit-new"
                f" && mv -f {path}.kit-new {path}"
            },
            {"run": "$ rm -rf /tmp/tmp.x"},
            {"run": wheel_state_read(path), "stdout": f"644 root root\n{sha}  {path}\n"},
        ]
    )
    host = Host(conn, step="kit wheel")
    assert conda.kit_wheel(host).changed
    assert not conda.kit_wheel(host).changed
    conn.assert_done()


@pytest.mark.parametrize(
    ("pieces", "reads", "expected"),
    [
        # A request body comes in pieces of any size; each read but the last is full.
        ([b"ab", b"c", b"defg", b""], [3, 3, 3], [b"abc", b"def", b"g"]),
        ([b"abcdefgh", b""], [2, 2, -1], [b"ab", b"cd", b"efgh"]),
        ([b""], [4, 4], [b"", b""]),
    ],
)
def test_the_reader_answers_full_reads_until_the_end(pieces, reads, expected):
    queue = list(pieces)
    reader = ExactReader(lambda: queue.pop(0) if queue else b"")
    got, positions = [], []
    for size in reads:
        got.append(reader.read(size))
        positions.append(reader.tell())
    assert got == expected
    assert positions == [sum(map(len, expected[: i + 1])) for i in range(len(expected))]


def test_the_reader_refuses_to_seek_back():
    reader = ExactReader(iter([b"abcd", b""]).__next__)
    reader.read(2)
    assert reader.seek(2) == 2
    with pytest.raises(OSError, match="cannot seek a request body to 0"):
        reader.seek(0)


def test_read_ahead_hands_the_pieces_on_in_order_then_the_end():
    ahead = ReadAhead(iter([b"ab", b"c", b"defg", b""]).__next__, limit=3)
    reader = ExactReader(ahead)
    assert [reader.read(5), reader.read(5), reader.read(5)] == [b"abcde", b"fg", b""]
    assert ahead() == b""


def test_read_ahead_reads_while_the_caller_is_busy_and_stops_at_its_limit():
    read = threading.Semaphore(0)

    def piece() -> bytes:
        read.release()
        return b"x" * 10

    ahead = ReadAhead(piece, limit=25)
    try:
        # Nobody has asked yet: three pieces come (the third crosses the limit), no fourth.
        for _ in range(3):
            assert read.acquire(timeout=5)
        assert not read.acquire(timeout=0.3)
        assert ahead() == b"x" * 10  # below the limit again: one more is read
        assert read.acquire(timeout=5)
        assert not read.acquire(timeout=0.3)
    finally:
        ahead.close()


def test_read_ahead_raises_the_body_s_error_after_the_pieces_before_it():
    def body():
        yield b"first"
        raise OSError("the client went away")

    ahead = ReadAhead(body().__next__, limit=100)
    assert ahead() == b"first"
    with pytest.raises(OSError, match="the client went away"):
        ahead()


def test_read_ahead_stops_reading_once_closed():
    reads = []
    ahead = ReadAhead(lambda: reads.append(1) or b"x" * 10, limit=10)
    deadline = time.monotonic() + 5
    while not reads and time.monotonic() < deadline:
        time.sleep(0.01)
    ahead.close()
    ahead()  # the piece read before the close: taking it would let another be read
    time.sleep(0.3)
    assert reads == [1]
    assert not [t for t in threading.enumerate() if t.name == "kit-read-ahead" and t.is_alive()]
