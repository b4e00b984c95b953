"""What a cloud-like host is seeded with, checked without booting one (unit tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.localcloud import vendor
from tests.localcloud.cloudlike import CloudLike, guest_agent_cloud_config, user_data
from tests.localcloud.limits import for_machine_type
from tests.stacks import stack_harness

REPO = Path(__file__).resolve().parents[2]
LOCAL_KEY = stack_harness.public_key(comment="localcloud-mlk-host-9")


def test_aws_user_data_is_the_programs_with_only_the_local_key():
    declared = CloudLike("aws").declare(LOCAL_KEY)
    document = yaml.safe_load(declared.user_data)
    assert declared.user_data.startswith("#cloud-config\n")
    assert document["users"][0] == "default"
    assert document["users"][1]["name"] == declared.ssh_user == "mlflow-admin"
    assert document["users"][1]["ssh_authorized_keys"] == [LOCAL_KEY]
    assert declared.key_pair_public_key == LOCAL_KEY
    assert user_data(declared) == declared.user_data


@pytest.mark.parametrize(
    ("stack_file", "cloud", "machine_type", "memory_mb"),
    [
        ("Pulumi.aws-dev.yaml", "aws", "t3.medium", 4096),
        ("Pulumi.gcp-dev.yaml", "gcp", "e2-small", 2048),
    ],
)
def test_example_stack_files_declare_their_vm(stack_file, cloud, machine_type, memory_mb):
    like = CloudLike.from_stack_file(REPO / "stacks" / stack_file)
    declared = like.declare(LOCAL_KEY)
    assert (like.cloud, like.stack) == (cloud, stack_file[7:-5])
    assert declared.machine_type == machine_type
    assert for_machine_type(declared.machine_type).memory_mb == memory_mb
    seeded = yaml.safe_load(user_data(declared))
    keys = [
        key for user in seeded["users"] if user != "default" for key in user["ssh_authorized_keys"]
    ]
    assert keys == [LOCAL_KEY]


def test_gcp_ssh_keys_become_the_guest_agents_users():
    declared = CloudLike("gcp").declare(LOCAL_KEY)
    assert declared.ssh_keys == f"mlflow-admin:{LOCAL_KEY}"
    document = yaml.safe_load(user_data(declared))
    assert document["groups"] == ["google-sudoers"]
    (user,) = document["users"]
    assert user["name"] == "mlflow-admin"
    assert user["ssh_authorized_keys"] == [LOCAL_KEY]
    assert "google-sudoers" in user["groups"] and "sudo" not in user["groups"]
    files = {f["path"]: f["content"] for f in document["write_files"]}
    assert files["/etc/sudoers.d/google_sudoers"] == (
        "%google-sudoers ALL=(ALL:ALL) NOPASSWD:ALL\n"
    )
    # The stack's startup script (it installs the stack's host key) runs on every boot.
    assert files["/var/lib/localcloud/metadata/startup-script"] == declared.startup_script
    assert "ssh-host-ed25519-key" in declared.startup_script


def test_a_gcp_host_serves_its_metadata_like_googles_metadata_server(tmp_path):
    """The startup script fetches the host key from the metadata server: the guest's
    stand-in serves the declared metadata, and refuses a request without the header."""
    import http.client
    import socket
    import subprocess
    import sys
    import time

    from tests.localcloud.cloudlike import METADATA_SERVER

    declared = CloudLike("gcp").declare(LOCAL_KEY)
    key = declared.metadata["ssh-host-ed25519-key"]
    assert key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = " ".join(declared.ssh_host_key.split()[:2])
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", "/dev/stdin"], input=key, capture_output=True, text=True,
        check=True,
    ).stdout.split()[:2]  # fmt: skip
    assert " ".join(derived) == public
    (tmp_path / "ssh-host-ed25519-key").write_text(key)
    program = tmp_path / "server.py"
    # The same program, on a free port of this machine instead of the guest's port 80.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    program.write_text(METADATA_SERVER.replace("(sys.argv[2], 80)", f"(sys.argv[2], {port})"))
    server = subprocess.Popen(
        [sys.executable, str(program), str(tmp_path), "127.0.0.1"], stderr=subprocess.DEVNULL
    )
    try:
        path = "/computeMetadata/v1/instance/attributes/"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.05)

        def get(name: str, headers: dict[str, str]) -> tuple[int, str]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", path + name, headers=headers)
                answer = connection.getresponse()
                return answer.status, answer.read().decode()
            finally:
                connection.close()

        assert get("ssh-host-ed25519-key", {})[0] == 403
        assert get("ssh-host-ed25519-key", {"Metadata-Flavor": "Google"}) == (200, key)
        assert get("nope", {"Metadata-Flavor": "Google"})[0] == 404
    finally:
        server.kill()
        server.wait()


def test_a_startup_script_runs_on_every_boot():
    config = yaml.safe_load(
        guest_agent_cloud_config("u:ssh-ed25519 AAAA k\nu:ssh-ed25519 BBBB k2\n", "echo hi\n")
    )
    assert [u["ssh_authorized_keys"] for u in config["users"]] == [
        ["ssh-ed25519 AAAA k", "ssh-ed25519 BBBB k2"]
    ]
    files = {f["path"]: f for f in config["write_files"]}
    assert files["/var/lib/localcloud/metadata/startup-script"]["content"] == "echo hi\n"
    assert "/var/lib/cloud/scripts/per-boot/google-startup-scripts" in files


def test_the_ssm_agent_download_has_a_stand_in():
    declared = CloudLike(
        "aws", overrides={"awsSshAccess": "session-manager", "sshAllowedCidrs": None}
    ).declare(LOCAL_KEY)
    (download,) = vendor.downloads(declared.user_data)
    assert download.host == "s3.eu-central-1.amazonaws.com"
    assert download.path.endswith("/latest/debian_amd64/amazon-ssm-agent.deb")


def test_a_download_without_a_stand_in_is_refused():
    with pytest.raises(
        ValueError, match="fetches https://example.org/x.sh, which the local cloud has no stand-in"
    ):
        vendor.downloads("#cloud-config\nruncmd:\n- curl -fsSL https://example.org/x.sh | sh\n")


def test_an_unknown_machine_type_names_the_known_ones():
    with pytest.raises(ValueError, match="e2-small"):
        for_machine_type("n2-highmem-96")
