"""What a stack's VM declares for its first boot, read from the real Pulumi program.

The program runs under Pulumi's mocks (the stack tests' harnesses), with the
stack's configuration, except that its SSH public keys are replaced by the one
key the local host will be logged into with; so the user data, key pair and
metadata the cloud-like host boots from are what ``pulumi up`` would send, not
a copy of them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT = "mlflow-server"


@dataclass(frozen=True)
class Declared:
    """The instance a stack declares, as far as its first boot is concerned."""

    cloud: str
    #: The stack's ``ssh_user`` output: the login user with sudo.
    ssh_user: str
    machine_type: str
    #: AWS: the instance's ``user_data`` (cloud-config), byte for byte.
    user_data: str | None = None
    #: AWS: the key pair's public key (cloud-init gives it to the image's default user).
    key_pair_public_key: str | None = None
    #: GCP: the instance's ``ssh-keys`` metadata, ``user:key`` lines.
    ssh_keys: str | None = None
    #: GCP: the ``startup-script`` metadata (or ``metadata_startup_script``), if any.
    startup_script: str | None = None
    #: GCP: every metadata value of the instance (what its metadata server serves).
    metadata: dict[str, str] | None = None
    #: The stack's ``ssh_host_key`` output: the host key its VM serves once the first
    #: boot installed it (AWS: cloud-init, before sshd starts; GCP: the startup script).
    ssh_host_key: str | None = None


def wire_config(config: Mapping[str, object]) -> dict[str, str]:
    """Stack settings as ``pulumi config set`` takes them -> the engine's form.

    Keys without a namespace belong to the project (``awsSshAccess``); values that
    are not strings are JSON (lists, maps, numbers, booleans), as Pulumi stores them.
    """
    wire = {}
    for key, value in config.items():
        if value is None:
            continue
        full = key if ":" in key else f"{PROJECT}:{key}"
        wire[full] = value if isinstance(value, str) else json.dumps(value)
    return wire


def stack_file_config(path: Path) -> dict[str, object]:
    """The ``config:`` of a ``Pulumi.<stack>.yaml`` (encrypted values cannot be read here)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    config = document.get("config") or {}
    secure = [k for k, v in config.items() if isinstance(v, dict) and "secure" in v]
    if secure:
        raise ValueError(f"{path}: encrypted values cannot be used locally: {', '.join(secure)}")
    return dict(config)


def declared_instance(
    cloud: str,
    config: Mapping[str, object] | None,
    ssh_public_key: str,
    stack: str,
    overrides: Mapping[str, object | None] | None = None,
) -> Declared:
    """Run the stack program for ``cloud`` under mocks; what its VM declares.

    ``config``: the stack's settings (see ``wire_config``); None takes the stack
    tests' minimal valid dev stack. ``overrides`` change single keys (None removes
    one). ``sshPublicKeys`` is replaced by ``[ssh_public_key]``. This is the only
    place the local cloud uses the stack tests' mock harness.
    """

    from tests.stacks import stack_harness

    if cloud not in ("aws", "gcp"):
        raise ValueError(f"cloud {cloud!r}: allowed aws, gcp")
    values = stack_harness.config(cloud) if config is None else wire_config(config)
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        values.pop(full, None)
        if value is not None:
            values.update(wire_config({full: value}))
    values[f"{PROJECT}:sshPublicKeys"] = json.dumps([ssh_public_key])
    with warnings.catch_warnings():
        # The provider SDKs warn about their own deprecated classes as they load them;
        # the stack tests, not this, judge the program's deprecations.
        warnings.simplefilter("ignore", DeprecationWarning)
        run = stack_harness.run(values, stack=stack)
    # The user data and the metadata hold the stack's private SSH host key: secrets.
    revealed, host_key = stack_harness.revealed, run.outputs.get("ssh_host_key")
    if cloud == "aws":
        instance = revealed(run.one("aws:ec2/instance:Instance").inputs)
        return Declared(
            cloud="aws",
            ssh_user=run.outputs["ssh_user"],
            machine_type=instance["instanceType"],
            user_data=instance.get("userData"),
            key_pair_public_key=run.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"],
            ssh_host_key=host_key,
        )
    instance = revealed(run.one("gcp:compute/instance:Instance").inputs)
    metadata = instance.get("metadata") or {}
    return Declared(
        cloud="gcp",
        ssh_user=run.outputs["ssh_user"],
        machine_type=instance["machineType"],
        ssh_keys=metadata.get("ssh-keys"),
        startup_script=metadata.get("startup-script") or instance.get("metadataStartupScript"),
        metadata=dict(metadata),
        ssh_host_key=host_key,
    )
