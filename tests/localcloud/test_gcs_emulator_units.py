"""The local cloud's GCS emulator with resumable uploads appended in place (gcs_emulator.py)
answers a resumable upload as the emulator did and as GCS documents it
(https://cloud.google.com/storage/docs/performing-resumable-uploads): 308 with the
received range until the last chunk, a chunk that does not start where the upload stands
refused, the object whole at the end."""

from __future__ import annotations

import hashlib
import io
import os

import requests

from tests.localcloud.services import BUCKET

KIB = 1024
CHUNK = 256 * KIB  # GCS wants chunks in multiples of 256 KiB


def start_upload(gcs, name: str) -> str:
    started = requests.post(
        f"{gcs.endpoint}/upload/storage/v1/b/{BUCKET}/o",
        params={"uploadType": "resumable", "name": name},
        json={},
        timeout=30,
    )
    assert started.status_code == 200, started.text
    return started.headers["Location"]


def put(session_url: str, data: bytes, content_range: str) -> requests.Response:
    return requests.put(
        session_url, data=data, headers={"Content-Range": content_range}, timeout=30
    )


def test_a_resumable_upload_in_chunks_is_the_object_and_a_misplaced_chunk_is_refused(gcs):
    data = os.urandom(3 * CHUNK + 1000)
    url = start_upload(gcs, "chunks/object.bin")

    first = put(url, data[:CHUNK], f"bytes 0-{CHUNK - 1}/*")
    assert first.status_code == 308 and first.headers["Range"] == f"bytes=0-{CHUNK - 1}"
    # A chunk that skips ahead (or repeats) is refused, and the upload stays where it was.
    skipped = put(url, data[2 * CHUNK : 3 * CHUNK], f"bytes {2 * CHUNK}-{3 * CHUNK - 1}/*")
    assert skipped.status_code == 400, skipped.text
    assert "expected 262144, got 524288" in skipped.text
    status = put(url, b"", "bytes */*")
    assert status.status_code == 308 and status.headers["Range"] == f"bytes=0-{CHUNK - 1}"

    second = put(url, data[CHUNK : 2 * CHUNK], f"bytes {CHUNK}-{2 * CHUNK - 1}/*")
    assert second.status_code == 308 and second.headers["Range"] == f"bytes=0-{2 * CHUNK - 1}"
    last = put(url, data[2 * CHUNK :], f"bytes {2 * CHUNK}-{len(data) - 1}/{len(data)}")
    assert last.status_code == 200, last.text
    assert last.json()["size"] == str(len(data))

    blob = gcs.client().bucket(BUCKET).get_blob("chunks/object.bin")
    assert blob.size == len(data)
    assert hashlib.sha256(blob.download_as_bytes()).digest() == hashlib.sha256(data).digest()
    # Nothing of the finished upload is left behind in the emulator's store.
    assert put(url, b"", "bytes */*").status_code == 404


def test_the_google_client_uploads_in_chunks_as_the_kit_does(gcs):
    data = os.urandom(5 * CHUNK + 7)
    blob = gcs.client().bucket(BUCKET).blob("client/object.bin", chunk_size=CHUNK)
    # No size given: chunks of chunk_size until a short read, as kit_artifacts uploads.
    blob.upload_from_file(io.BytesIO(data))
    stored = gcs.client().bucket(BUCKET).get_blob("client/object.bin")
    assert stored.size == len(data) and stored.download_as_bytes() == data
