"""MLflow's multipart upload on GCS from a VM: presigned part URLs signed through IAM.

On a VM the storage client's credentials are the metadata server's, with no private key;
MLflow 3.17's GCS repository asks google-cloud-storage to sign with them alone and fails.
The kit's repository hands it the account's email and token, so it signs with IAM's
signBlob. Here the XML multipart API is a local server (the GCS emulator answers 501 to
it) and signBlob is replaced at google-cloud-storage's own call to it (``_sign_message``:
the request it would send goes to iamcredentials.googleapis.com). What the real IAM does
that this does not: check the token and the tokenCreator grant (stacks/gcp/identity.py).
"""

from __future__ import annotations

import base64
import datetime
import http.server
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from google.auth import compute_engine
from google.cloud import storage
from google.cloud.storage import _signing
from mlflow.store.artifact.gcs_artifact_repo import GCSArtifactRepository

from provisioning.artifact_streaming import kit_artifacts

EMAIL = "mlflow-vm@acme-dev.iam.gserviceaccount.com"


class VmCredentials(compute_engine.Credentials):
    """The metadata server's credentials, as on a VM, without a metadata server: a refresh
    learns the account's email and a token, as google-auth's does. The universe domain is
    given, or google-auth would ask the metadata server for it."""

    def __init__(self, **kwargs):
        super().__init__(**{"universe_domain": "googleapis.com", **kwargs})

    def refresh(self, request):
        self._service_account_email = EMAIL
        self.token = "ya29.vm-token"
        self.expiry = datetime.datetime.utcnow() + datetime.timedelta(hours=1)


class XmlApi(http.server.BaseHTTPRequestHandler):
    """GCS's XML API, initiating a multipart upload (POST OBJECT?uploads)."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        assert urlsplit(self.path).query == "uploads", self.path
        body = (b"<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult "
                b"xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
                b"<Bucket>artifacts</Bucket><Key>k</Key><UploadId>upload-7</UploadId>"
                b"</InitiateMultipartUploadResult>")  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def client():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), XmlApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield storage.Client(project="acme-dev", credentials=VmCredentials(),
                         client_options={"api_endpoint": endpoint})  # fmt: skip
    server.shutdown()


@pytest.fixture
def signed(monkeypatch):
    calls = []

    def sign_blob(message, access_token, service_account_email, universe_domain="x"):
        calls.append((access_token, service_account_email))
        return base64.b64encode(b"signature-from-iam").decode()

    monkeypatch.setattr(_signing, "_sign_message", sign_blob)
    return calls


def test_part_urls_are_signed_through_iam_as_the_vms_account(client, signed, tmp_path):
    repo = kit_artifacts.StreamingGCSArtifactRepository("gs://artifacts/runs", client=client)
    answer = repo.create_multipart_upload(str(tmp_path / "model.bin"), 3, "run-1/artifacts")

    assert answer.upload_id == "upload-7"
    assert [c.part_number for c in answer.credentials] == [1, 2, 3]
    for number, credential in enumerate(answer.credentials, 1):
        url = urlsplit(credential.url)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert unquote(url.path).endswith("/artifacts/runs/run-1/artifacts/model.bin")
        assert (query["partNumber"], query["uploadId"]) == (str(number), "upload-7")
        assert query["X-Goog-Credential"].startswith(f"{EMAIL}/")
        assert query["X-Goog-Signature"] == b"signature-from-iam".hex()
    assert signed == [("ya29.vm-token", EMAIL)] * 3


def test_mlflows_own_repository_cannot_sign_on_a_vm(client, signed, tmp_path):
    """What the kit's repository fixes: the same call through MLflow's fails."""
    repo = GCSArtifactRepository("gs://artifacts/runs", client=client)
    with pytest.raises(AttributeError, match="private key"):
        repo.create_multipart_upload(str(tmp_path / "model.bin"), 1, "run-1/artifacts")
    assert signed == []


def test_the_signing_arguments_stay_inside_the_multipart_call(client, signed, tmp_path):
    repo = kit_artifacts.StreamingGCSArtifactRepository("gs://artifacts/runs", client=client)
    repo.create_multipart_upload(str(tmp_path / "model.bin"), 1, None)
    blob = client.bucket("artifacts").blob("elsewhere")
    with pytest.raises(AttributeError, match="private key"):
        blob.generate_signed_url(expiration=datetime.timedelta(minutes=5), version="v4")
    assert len(signed) == 1


def test_credentials_with_a_key_sign_themselves():
    from google.auth.credentials import Signing

    class KeyFile(Signing):  # a service-account key: google-cloud-storage signs with it
        signer = signer_email = None

        def sign_bytes(self, message):
            return b""

    assert kit_artifacts.iam_signing(KeyFile()) == {}
