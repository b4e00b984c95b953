"""The artifact store as the VM's identity sees it: list, copy server-side, small reads and writes.

Installed as /opt/mlflow/bin/kit_storage.py; the backup, gc and metrics programs
import it (gc and metrics also for the admin's password). The destination is the
server's own (MLFLOW_ARTIFACTS_DESTINATION, or
MLFLOW_DEFAULT_ARTIFACT_ROOT with direct artifacts); the client comes from the
server's environment (boto3 for s3://, google-cloud-storage for gs://) with the
same settings MLflow uses (MLFLOW_S3_ENDPOINT_URL, STORAGE_EMULATOR_HOST, the
VM's identity or the storage credentials in the environment file).

Everything the kit keeps in the bucket lives under ``<prefix>/.kit-backups/``:
the VM's identity may write only under the prefix, and MLflow never names a run,
an experiment or a model with a leading dot.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

BACKUPS = ".kit-backups"
#: S3's CopyObject copies up to 5 GiB in one request; larger objects go part by part.
S3_SINGLE_COPY_MAX = 5 * 1024**3


def admin_password() -> str:
    """The admin's password: with auth oidc the access token of the kit's service account,
    read from its file (MLFLOW_KIT_ADMIN_TOKEN_FILE, renewed by fab bootstrap) each time."""
    path = os.environ.get("MLFLOW_KIT_ADMIN_TOKEN_FILE")
    if path:
        with open(path) as handle:
            return handle.read().strip()
    return os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")


@dataclass(frozen=True)
class Entry:
    """One object under the prefix: its key relative to the prefix, size and checksum.

    The checksum is what the store computes itself: S3's ETag (the MD5 of a
    single-part upload), GCS's MD5 (or CRC32C for composite objects).
    """

    key: str
    size: int
    checksum: str

    @property
    def blob(self) -> str:
        """Where a backup keeps this content (shared by every backup that holds it)."""
        digest = hashlib.sha256(f"{self.checksum}|{self.size}".encode()).hexdigest()[:40]
        return f"{BACKUPS}/blobs/{digest}"


def destination() -> str:
    value = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION") or os.environ.get(
        "MLFLOW_DEFAULT_ARTIFACT_ROOT"
    )
    if not value:
        raise SystemExit(
            "neither MLFLOW_ARTIFACTS_DESTINATION nor MLFLOW_DEFAULT_ARTIFACT_ROOT is set"
        )
    return value


class Store:
    """Keys are relative to the destination's prefix."""

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        self.uri = uri.rstrip("/")
        self.scheme, self.bucket = parts.scheme, parts.netloc
        self.prefix = parts.path.strip("/")

    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def artifacts(self) -> list[Entry]:
        """Every object under the prefix except the kit's own (``.kit-backups/``)."""
        return [e for e in self.list("") if not e.key.startswith(BACKUPS + "/")]


class S3Store(Store):
    def __init__(self, uri: str, client=None):
        super().__init__(uri)
        if client is None:
            import boto3

            client = boto3.client(
                "s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
            )
        self.client = client

    def list(self, under: str) -> list[Entry]:
        prefix = self.full(under) if under else (self.prefix + "/" if self.prefix else "")
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                found.append(
                    Entry(self.relative(item["Key"]), item["Size"], item["ETag"].strip('"'))
                )
        return found

    def children(self, under: str) -> list[str]:
        """Names one level below ``under/`` (like ``ls``)."""
        prefix = self.full(under).rstrip("/") + "/"
        names = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            names += [
                p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            ]
        return names

    def head(self, key: str) -> Entry | None:
        try:
            item = self.client.head_object(Bucket=self.bucket, Key=self.full(key))
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Entry(key, item["ContentLength"], item["ETag"].strip('"'))

    def copy(self, source: str, target: str, size: int) -> None:
        """A server-side copy: no byte passes through the VM."""
        src = {"Bucket": self.bucket, "Key": self.full(source)}
        if size <= S3_SINGLE_COPY_MAX:
            self.client.copy_object(CopySource=src, Bucket=self.bucket, Key=self.full(target))
        else:
            self.client.copy(src, self.bucket, self.full(target))

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.full(key), Body=data)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.full(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def upload(self, key: str, path: str) -> None:
        self.client.upload_file(path, self.bucket, self.full(key))

    def download(self, key: str, path: str) -> None:
        self.client.download_file(self.bucket, self.full(key), path)


class GcsStore(Store):
    def __init__(self, uri: str, client=None):
        super().__init__(uri)
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        self.client = client
        self.bucket_ref = client.bucket(self.bucket)

    @staticmethod
    def _checksum(blob) -> str:
        if blob.md5_hash:
            return "md5:" + base64.b64decode(blob.md5_hash).hex()
        return "crc32c:" + base64.b64decode(blob.crc32c or "").hex()

    def list(self, under: str) -> list[Entry]:
        prefix = self.full(under) if under else (self.prefix + "/" if self.prefix else "")
        return [
            Entry(self.relative(b.name), int(b.size), self._checksum(b))
            for b in self.client.list_blobs(self.bucket, prefix=prefix)
        ]

    def children(self, under: str) -> list[str]:
        prefix = self.full(under).rstrip("/") + "/"
        pages = self.client.list_blobs(self.bucket, prefix=prefix, delimiter="/")
        for _ in pages:  # the prefixes are known once the pages are read
            pass
        return sorted(p[len(prefix) :].rstrip("/") for p in pages.prefixes)

    def head(self, key: str) -> Entry | None:
        blob = self.bucket_ref.get_blob(self.full(key))
        return None if blob is None else Entry(key, int(blob.size), self._checksum(blob))

    def copy(self, source: str, target: str, size: int) -> None:
        """A server-side rewrite, repeated until done (large objects take several calls)."""
        del size
        src = self.bucket_ref.blob(self.full(source))
        dst = self.bucket_ref.blob(self.full(target))
        token, _done, _total = dst.rewrite(src)
        while token is not None:
            token, _done, _total = dst.rewrite(src, token=token)

    def put(self, key: str, data: bytes) -> None:
        self.bucket_ref.blob(self.full(key)).upload_from_string(data)

    def get(self, key: str) -> bytes | None:
        blob = self.bucket_ref.get_blob(self.full(key))
        return None if blob is None else blob.download_as_bytes()

    def upload(self, key: str, path: str) -> None:
        self.bucket_ref.blob(self.full(key)).upload_from_filename(path)

    def download(self, key: str, path: str) -> None:
        self.bucket_ref.blob(self.full(key)).download_to_filename(path)


def open_store(uri: str | None = None) -> Store:
    uri = uri or destination()
    scheme = urlsplit(uri).scheme
    if scheme == "s3":
        return S3Store(uri)
    if scheme == "gs":
        return GcsStore(uri)
    raise SystemExit(f"artifact store {uri!r}: only s3:// and gs:// are supported")
