"""gcp-storage-emulator's command line, with its resumable uploads appended in place.

The emulator keeps an unfinished resumable upload in one file on disk and, for every
chunk, reads that whole file, adds the chunk and writes it all back
(``Storage.add_to_resumable_upload``; ``get_resumable_byte_count`` also reads the whole
file to learn its length). An upload in n chunks so costs about n^2 / 2 chunks of disk
traffic: 256 / 512 / 1024 MB took 9.5 / 34 / 110 s to go up in 16 MiB chunks. Real GCS
takes a chunk in time proportional to the chunk.

Here the two methods append the chunk to the file and take its length from the file
system. What the API answers is the same, checked the same way: a chunk whose
Content-Range start is not the number of bytes received so far is refused with the
emulator's own 400 (GCS answers 400 / 503 there too, and a client re-asks the offset),
the upload stays incomplete (308 and its Range) until ``total_size`` bytes are in, and
the completed object's bytes (the first ``total_size``) go to the emulator's own
checksum and object code. The in-memory store (``--no-store-on-disk``) keeps the
emulator's own methods.

Run as the emulator's command is: ``python gcs_emulator.py start --host ... --port ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gcp_storage_emulator import __main__ as cli
from gcp_storage_emulator.exceptions import BadRequest
from gcp_storage_emulator.storage import RESUMABLE_DIR, Storage

_emulators_add = Storage.add_to_resumable_upload
_emulators_count = Storage.get_resumable_byte_count


def _upload_file(storage: Storage, file_id: str) -> Path:
    relative = storage._object_path(RESUMABLE_DIR, storage.safe_id(file_id))
    return storage._store._disk_path(relative)


def _received(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def get_resumable_byte_count(self: Storage, file_id: str) -> int:
    if self._use_memory_fs:
        return _emulators_count(self, file_id)
    return _received(_upload_file(self, file_id))


def add_to_resumable_upload(
    self: Storage, file_id: str, content, total_size=None, expected_start=None
):
    if self._use_memory_fs:
        return _emulators_add(self, file_id, content, total_size, expected_start)
    path = _upload_file(self, file_id)
    received = _received(path)
    if expected_start is not None and expected_start != received:
        # The emulator's own message for the same refusal.
        raise BadRequest(f"Invalid Content-Range start: expected {received}, got {expected_start}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as upload:
        upload.write(content or b"")
    size = received + len(content or b"")
    if total_size is None or size < total_size:
        return None
    return path.read_bytes()[:total_size]


Storage.get_resumable_byte_count = get_resumable_byte_count
Storage.add_to_resumable_upload = add_to_resumable_upload

if __name__ == "__main__":
    cli.main(sys.argv[1:])
