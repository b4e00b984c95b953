"""The GCP startup script, run for real: it installs the stack's host key from the metadata.

The script the program declares runs with bash in a private mount namespace whose
``/etc/ssh`` and ``/etc/default`` are empty scratch directories (this machine's own are
untouched), seeded with the keys Google's guest agent generates on a first boot (RSA,
ECDSA, ED25519, by ``ssh-keygen``). ``curl`` and ``systemctl`` are stand-ins on PATH:
the first answers the metadata URL with the private key the program put in the metadata
(and checks the ``Metadata-Flavor`` header the metadata server requires), the second
records what the script asks of systemd. What the real thing does that this does not:
the metadata server and sshd are not there; google-startup-scripts.service's ordering
after the guest agent is the unit's own (quoted in stacks/gcp/server.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import stack_harness
from stack_harness import config, revealed

from stacks import contract
from stacks.gcp.server import HOST_KEY_METADATA

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ssh-keygen"),
        reason="needs root, unshare and ssh-keygen for a private /etc/ssh",
    ),
]
URL = f"http://metadata.google.internal/computeMetadata/v1/instance/attributes/{HOST_KEY_METADATA}"

CURL = """#!/bin/bash
# Stand-in for curl against the metadata server: serves one attribute.
out= url= flavor=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -H) [ "$2" = "Metadata-Flavor: Google" ] && flavor=1; shift ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
echo "curl $url" >> "$STANDIN_LOG"
[ -n "$flavor" ] && [ "$url" = "$EXPECTED_URL" ] && [ -e "$METADATA_VALUE" ] || exit 22
cp "$METADATA_VALUE" "$out"
"""
SYSTEMCTL = """#!/bin/bash
echo "systemctl $*" >> "$STANDIN_LOG"
"""
#: Inside the namespace: scratch /etc/ssh and /etc/default, the guest agent's first-boot
#: keys, then the script; /etc/ssh's listing is copied out for the test to read.
RUN = """set -e
mount -t tmpfs tmpfs /etc/ssh
mount -t tmpfs tmpfs /etc/default
if [ -n "$AGENT_KEYS" ]; then
  for t in rsa ecdsa ed25519; do ssh-keygen -q -t $t -N '' -f /etc/ssh/ssh_host_${t}_key; done
fi
if [ -e "$WORK/etc-ssh" ]; then cp -a "$WORK/etc-ssh/." /etc/ssh/; fi
if [ -e "$WORK/etc-default" ]; then cp -a "$WORK/etc-default/." /etc/default/; fi
status=0
bash "$WORK/startup-script" > "$WORK/out" 2>&1 || status=$?
rm -rf "$WORK/etc-ssh" "$WORK/etc-default"
cp -a /etc/ssh "$WORK/etc-ssh" && cp -a /etc/default "$WORK/etc-default"
exit $status
"""


@pytest.fixture(scope="module")
def declared():
    run = stack_harness.run(config("gcp"))
    metadata = revealed(run.one("gcp:compute/instance:Instance").inputs["metadata"])
    return metadata, run.outputs[contract.SSH_HOST_KEY]


def boot(work: Path, metadata: dict, *, agent_keys: bool, serve: bool = True):
    """One run of the startup script; its exit status and what it asked of systemd."""
    shims = work / "bin"
    shims.mkdir(exist_ok=True)
    for name, text in (("curl", CURL), ("systemctl", SYSTEMCTL)):
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    (work / "startup-script").write_text(metadata["startup-script"])
    value = work / "metadata-value"
    value.unlink(missing_ok=True)
    if serve:
        value.write_text(metadata[HOST_KEY_METADATA])
    log = work / "standin.log"
    log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{shims}:{os.environ['PATH']}",
        "WORK": str(work),
        "AGENT_KEYS": "1" if agent_keys else "",
        "STANDIN_LOG": str(log),
        "EXPECTED_URL": URL,
        "METADATA_VALUE": str(value),
    }
    result = subprocess.run(
        ["unshare", "--mount", "--fork", "bash", "-c", RUN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result.returncode, [c for c in calls if c.startswith("systemctl")], (work / "out")


def host_keys(work: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((work / "etc-ssh").glob("ssh_host_*"))}


def test_first_boot_replaces_the_agents_keys_with_the_stacks_and_restarts_sshd(declared, tmp_path):
    metadata, exported = declared
    status, systemd, out = boot(tmp_path, metadata, agent_keys=True)
    assert status == 0, out.read_text()
    keys = host_keys(tmp_path)
    assert sorted(keys) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert keys["ssh_host_ed25519_key"] == metadata[HOST_KEY_METADATA]
    assert keys["ssh_host_ed25519_key.pub"].strip() == exported
    assert (tmp_path / "etc-ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert systemd == ["systemctl try-restart ssh.service"]
    config = (tmp_path / "etc-default/instance_configs.cfg").read_text()
    assert config == "[InstanceSetup]\nset_host_keys = false\n"


def test_every_later_boot_changes_nothing(declared, tmp_path):
    metadata, _ = declared
    assert boot(tmp_path, metadata, agent_keys=True)[0] == 0
    before = host_keys(tmp_path)
    status, systemd, out = boot(tmp_path, metadata, agent_keys=False)
    assert status == 0, out.read_text()
    assert host_keys(tmp_path) == before
    assert systemd == []
    config = (tmp_path / "etc-default/instance_configs.cfg").read_text()
    assert config.count("set_host_keys = false") == 1


def test_without_the_metadata_value_the_script_fails_and_keeps_the_keys(declared, tmp_path):
    metadata, _ = declared
    status, systemd, _ = boot(tmp_path, metadata, agent_keys=True, serve=False)
    assert status != 0
    assert len(host_keys(tmp_path)) == 6  # the agent's three pairs, untouched
    assert systemd == []
    assert not [p for p in (tmp_path / "etc-ssh").iterdir() if p.name.startswith(".host-key")]
