"""Streaming uploads of proxied artifacts to S3 and GCS, installed into the server's environment.

MLflow's server streams a request body straight into the artifact store only when the
repository is a ``StreamUploadMixin`` (``mlflow/server/artifact_router.py`` under uvicorn,
``handlers._upload_artifact`` under gunicorn); otherwise it writes the whole body to a
temporary file first, so a 4 GB artifact needs 4 GB of the boot disk. MLflow 3.17's S3 and
GCS repositories are not stream-capable; these subclasses are, and nothing else differs.

They replace the built-in ``s3`` and ``gs`` repositories through the entry point group
``mlflow.artifact_repository``: ``artifact_repository_registry`` registers the built-ins
first and the entry points after them, into one dict keyed by scheme, so the entry point
wins. The distribution that declares them is built by ``provisioning.artifact_streaming``.

Memory per upload is bounded by the part size times the parts held at once:

- S3: ``upload_fileobj`` with parts of ``S3_PART_BYTES`` (8 MiB, boto3's default part
  size), ``S3_CONCURRENCY`` (4) parts in flight and at most ``S3_PARTS_IN_MEMORY`` (4)
  read ahead of them, plus the one being read: about 50 MiB (measured: 60 MiB more RSS
  for a 400 MiB upload). S3 takes at most 10,000 parts, so an artifact sent this way is
  at most 78 GiB; the size is unknown while it streams, so the part size cannot grow
  with it. Larger ones take MLflow's multipart upload (MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD),
  which sends the parts to the bucket directly.
- GCS: a resumable upload (``blob.upload_from_file`` with ``chunk_size``) of
  ``GCS_CHUNK_BYTES`` (16 MiB, a multiple of 256 KiB as GCS requires; or
  MLFLOW_GCS_UPLOAD_CHUNK_SIZE when set), one chunk at a time. The upload sends a chunk
  and waits for GCS's answer before it reads the next, so a thread of its own
  (``ReadAhead``) goes on reading the request body meanwhile, up to one chunk ahead:
  about 48 MiB (the chunk being sent, the one read ahead, the one being assembled). No
  size limit but GCS's 5 TiB.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import posixpath
import queue
import threading
from collections.abc import AsyncIterable, Callable, Iterator
from mimetypes import guess_type
from typing import BinaryIO

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.artifact_repo import StreamUploadMixin
from mlflow.store.artifact.gcs_artifact_repo import GCSArtifactRepository
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

MIB = 1024 * 1024
S3_PART_BYTES = 8 * MIB
S3_CONCURRENCY = 4
S3_PARTS_IN_MEMORY = 4
GCS_CHUNK_BYTES = 16 * MIB
#: Downloads (kit_downloads): what is read from the bucket per step, one step ahead of
#: the client at most.
DOWNLOAD_CHUNK_BYTES = 8 * MIB
#: GCS downloads: pieces read from the bucket that may wait for the client (the sending
#: thread holds one more back until the download's checksum has been checked).
PIPE_PIECES = 2
HELD_BACK_BYTES = 64 * 1024


def not_found(path: str) -> MlflowException:
    return MlflowException(f"No artifact at '{path}'", error_code=RESOURCE_DOES_NOT_EXIST)


def _chunks(read: Callable[[], bytes], close: Callable[[], None]) -> Iterator[bytes]:
    try:
        while chunk := read():
            yield chunk
    finally:
        close()


class ExactReader:
    """A read-only binary stream over pieces of any size that answers ``read(n)`` with
    exactly ``n`` bytes until the end: both uploaders take a short read for the end of the
    data (s3transfer's last part, google-resumable-media's final chunk)."""

    def __init__(self, next_piece: Callable[[], bytes]):
        self._next_piece = next_piece
        self._buffer = bytearray()
        self._position = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        # The resumable upload seeks to where it already is; nothing can go back.
        target = offset if whence == 0 else self._position + offset
        if whence not in (0, 1) or target != self._position:
            raise OSError(f"cannot seek a request body to {offset} (whence {whence})")
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        while not self._ended and (size is None or size < 0 or len(self._buffer) < size):
            piece = self._next_piece()
            if piece:
                self._buffer += piece
            else:
                self._ended = True
        if size is None or size < 0:
            size = len(self._buffer)
        with memoryview(self._buffer) as view:
            data = bytes(view[:size])
        del self._buffer[:size]
        self._position += len(data)
        return data


def _pieces_of(stream: BinaryIO) -> Callable[[], bytes]:
    return lambda: stream.read(1 * MIB)


def _pieces_from_loop(chunks: AsyncIterable[bytes]) -> Callable[[], bytes]:
    """Pieces of an async body for a reader in a worker thread: each read is run on the
    event loop (where the request lives), the worker waits for it."""
    loop = asyncio.get_running_loop()
    iterator = aiter(chunks)

    async def next_piece() -> bytes:
        try:
            return await anext(iterator)
        except StopAsyncIteration:
            return b""

    return lambda: asyncio.run_coroutine_threadsafe(next_piece(), loop).result()


class ReadAhead:
    """The pieces of ``next_piece`` read by a thread of its own, ahead of the caller until
    ``limit`` bytes are waiting: the body keeps coming while the caller sends what it has.

    The thread stops at the end of the pieces, at their first error (raised to the
    caller in order, after the pieces before it) and once ``close`` is called (the
    upload ended, well or not: nothing reads what is left).
    """

    def __init__(self, next_piece: Callable[[], bytes], limit: int) -> None:
        self._next_piece = next_piece
        self._limit = limit
        self._pieces: collections.deque[bytes] = collections.deque()
        self._held = 0
        self._end: _End | None = None
        self._closed = False
        self._changed = threading.Condition()
        # In the caller's context, as the reads were before they moved to this thread.
        reading = contextvars.copy_context()
        threading.Thread(
            target=reading.run, args=(self._read,), name="kit-read-ahead", daemon=True
        ).start()

    def _read(self) -> None:
        error = None
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._held < self._limit or self._closed)
                    if self._closed:
                        return
                piece = self._next_piece()
                if not piece:
                    break
                with self._changed:
                    self._pieces.append(piece)
                    self._held += len(piece)
                    self._changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised to the caller
            error = exc
        with self._changed:
            self._end = _End(error)
            self._changed.notify_all()

    def __call__(self) -> bytes:
        with self._changed:
            self._changed.wait_for(lambda: self._pieces or self._end is not None)
            if self._pieces:
                piece = self._pieces.popleft()
                self._held -= len(piece)
                self._changed.notify_all()
                return piece
            if self._end.error is not None:
                raise self._end.error
            return b""

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class _StreamUploads(StreamUploadMixin):
    """MLflow's stream-upload interface over a repository's ``_upload_reader``."""

    def _read_ahead_bytes(self) -> int:
        """Bytes of the body read ahead of the upload while it sends; 0 for none (S3's
        transfer manager reads ahead of its parts itself)."""
        return 0

    def _upload_pieces(self, next_piece, artifact_file_name, artifact_path) -> None:
        limit = self._read_ahead_bytes()
        if not limit:
            self._upload_reader(ExactReader(next_piece), artifact_file_name, artifact_path)
            return
        ahead = ReadAhead(next_piece, limit)
        try:
            self._upload_reader(ExactReader(ahead), artifact_file_name, artifact_path)
        finally:
            ahead.close()

    def log_artifact_from_stream(self, stream, artifact_file_name, artifact_path=None):
        self._upload_pieces(_pieces_of(stream), artifact_file_name, artifact_path)

    async def log_artifact_from_async_stream(self, chunks, artifact_file_name, artifact_path=None):
        pieces = _pieces_from_loop(chunks)
        await asyncio.to_thread(self._upload_pieces, pieces, artifact_file_name, artifact_path)


class StreamingS3ArtifactRepository(_StreamUploads, S3ArtifactRepository):
    """MLflow's S3 repository, with request bodies uploaded as a multipart upload."""

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=S3_PART_BYTES,
            multipart_chunksize=S3_PART_BYTES,
            max_concurrency=S3_CONCURRENCY,
            # The CRT client ignores the read-ahead bound below.
            preferred_transfer_client="classic",
        )
        # s3transfer's bound on parts read ahead of the uploads (default 10); boto3's
        # constructor does not take it (s3transfer/manager.py TransferConfig).
        config.max_in_memory_upload_chunks = S3_PARTS_IN_MEMORY
        return config

    def _upload_reader(self, reader: ExactReader, name: str, artifact_path: str | None) -> None:
        bucket, key = self.parse_s3_compliant_uri(self.artifact_uri)
        key = posixpath.join(key, artifact_path or "", posixpath.basename(name))
        # The same object metadata as log_artifact gives a file (_upload_file).
        extra_args = {}
        guessed_type, guessed_encoding = guess_type(name)
        if guessed_type is not None:
            extra_args["ContentType"] = guessed_type
        if guessed_encoding is not None:
            extra_args["ContentEncoding"] = guessed_encoding
        extra_args.update(self._bucket_owner_params)
        extra_args.update(self.get_s3_file_upload_extra_args() or {})
        self._get_s3_client().upload_fileobj(
            reader, bucket, key, ExtraArgs=extra_args, Config=self._transfer_config()
        )

    def open_artifact(self, artifact_path: str) -> tuple[int, Iterator[bytes]]:
        """The size of the object at ``artifact_path`` and its bytes, read as they are sent."""
        from botocore.exceptions import ClientError

        bucket, key = self.parse_s3_compliant_uri(self.artifact_uri)
        key = posixpath.join(key, artifact_path)
        try:
            answer = self._get_s3_client().get_object(
                Bucket=bucket, Key=key, **self._bucket_owner_params
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise not_found(artifact_path) from error
            raise
        body = answer["Body"]
        return answer["ContentLength"], _chunks(lambda: body.read(DOWNLOAD_CHUNK_BYTES), body.close)


#: Extra arguments for ``Blob.generate_signed_url`` in this thread's current call, if any.
_SIGNING: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kit_signing", default=None)


def _signing_aware(generate: Callable) -> Callable:
    @functools.wraps(generate)
    def generate_signed_url(self, *args, **kwargs):
        return generate(self, *args, **{**(_SIGNING.get() or {}), **kwargs})

    generate_signed_url.kit_signing = True
    return generate_signed_url


def iam_signing(credentials) -> dict:
    """``generate_signed_url``'s arguments for signing through the IAM API (signBlob), when
    ``credentials`` hold no private key, as a VM's service account does: its email and a
    current access token. Empty for credentials that sign themselves (a key file)."""
    from google.auth.credentials import Signing
    from google.auth.transport.requests import Request

    if isinstance(credentials, Signing):
        return {}
    if not credentials.valid or getattr(credentials, "service_account_email", None) in (
        None,
        "default",
    ):
        credentials.refresh(Request())  # Compute Engine learns its email on a refresh
    return {"service_account_email": credentials.service_account_email,
            "access_token": credentials.token}  # fmt: skip


class StreamingGCSArtifactRepository(_StreamUploads, GCSArtifactRepository):
    """MLflow's GCS repository, with request bodies sent as a resumable upload, and the
    presigned part URLs of MLflow's multipart upload signed through IAM.

    MLflow 3.17's ``create_multipart_upload`` calls ``blob.generate_signed_url`` with the
    client's credentials alone; on a VM those are the metadata server's, which hold no key,
    and google-auth refuses ("you need a private key to sign credentials"), so every
    upload of 500 MiB or more from a client failed. Given the account's email and token,
    google-cloud-storage signs with IAM's signBlob instead (the stack grants the VM's
    account roles/iam.serviceAccountTokenCreator on itself for it).
    """

    def create_multipart_upload(self, local_file, num_parts=1, artifact_path=None):
        from google.cloud.storage import Blob

        if not getattr(Blob.generate_signed_url, "kit_signing", False):
            Blob.generate_signed_url = _signing_aware(Blob.generate_signed_url)
        token = _SIGNING.set(iam_signing(self.client._credentials))
        try:
            return super().create_multipart_upload(local_file, num_parts, artifact_path)
        finally:
            _SIGNING.reset(token)

    def _chunk_bytes(self) -> int:
        return self._GCS_UPLOAD_CHUNK_SIZE or GCS_CHUNK_BYTES

    def _read_ahead_bytes(self) -> int:
        return self._chunk_bytes()

    def _upload_reader(self, reader: ExactReader, name: str, artifact_path: str | None) -> None:
        bucket, path = self.parse_gcs_uri(self.artifact_uri)
        path = posixpath.join(path, artifact_path or "", posixpath.basename(name))
        blob = self._get_bucket(bucket).blob(path, chunk_size=self._chunk_bytes())
        # No size: with chunk_size set, upload_from_file makes a resumable upload that
        # reads chunk_size at a time and ends at the first short read.
        # The content type log_artifact's upload_from_filename guesses from the name.
        blob.upload_from_file(
            reader, content_type=guess_type(name)[0], timeout=self._GCS_DEFAULT_TIMEOUT
        )

    def open_artifact(self, artifact_path: str) -> tuple[int, Iterator[bytes]]:
        """The size of the object at ``artifact_path`` and its bytes, read as they are sent:
        one GET of the generation found first (so an overwrite meanwhile cannot mix two
        versions), through google-cloud-storage's own download, which checks the object's
        checksum and resumes a broken response where it stopped."""
        bucket, path = self.parse_gcs_uri(self.artifact_uri)
        gcs_bucket = self._get_bucket(bucket)
        found = gcs_bucket.get_blob(
            posixpath.join(path, artifact_path), timeout=self._GCS_DEFAULT_TIMEOUT
        )
        if found is None:
            raise not_found(artifact_path)
        blob = gcs_bucket.blob(found.name, generation=found.generation)
        return found.size, _piped(
            lambda pipe: blob.download_to_file(pipe, timeout=self._GCS_DEFAULT_TIMEOUT)
        )


class _Pipe:
    """The writable file a download writes into, handed to the sending thread in pieces
    of ``DOWNLOAD_CHUNK_BYTES``, at most ``PIPE_PIECES`` waiting: the writer blocks while
    the client is slower, and fails once the reader has gone (the client went away)."""

    def __init__(self) -> None:
        self.pieces: queue.Queue = queue.Queue(maxsize=PIPE_PIECES)
        self.buffer = bytearray()
        self.gone = threading.Event()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= DOWNLOAD_CHUNK_BYTES:
            self.put(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def put(self, item: object) -> None:
        while not self.gone.is_set():
            try:
                self.pieces.put(item, timeout=1)
                return
            except queue.Full:
                continue
        raise OSError("the download's client went away")


def _piped(download: Callable[[_Pipe], object]) -> Iterator[bytes]:
    """``download(pipe)`` in a thread of its own, its bytes as they come but for the last
    ``HELD_BACK_BYTES``, sent once the download has ended well (its checksum checked), so
    a failure at the end still breaks the response instead of completing it."""
    pipe = _Pipe()

    def run() -> None:
        error = None
        try:
            download(pipe)
            if pipe.buffer:
                pipe.put(bytes(pipe.buffer))
        except BaseException as exc:  # noqa: BLE001 - handed to the sending thread
            error = exc
        with contextlib.suppress(OSError):  # the client went away: nobody reads it
            pipe.put(_End(error))

    threading.Thread(target=run, name="kit-gcs-download", daemon=True).start()
    tail = b""
    try:
        while not isinstance(item := pipe.pieces.get(), _End):
            data = tail + item
            tail = data[-HELD_BACK_BYTES:]
            if len(data) > HELD_BACK_BYTES:
                yield data[:-HELD_BACK_BYTES]
        if item.error is not None:
            raise item.error
        if tail:
            yield tail
    finally:
        pipe.gone.set()


class _End:
    def __init__(self, error: BaseException | None):
        self.error = error
