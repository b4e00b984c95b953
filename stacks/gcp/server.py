"""The server: a Shielded Debian 12 VM with its own service account and a static address,
the SSH host key the stack generated, and the MLflow admin password it is bootstrapped
with."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.settings import GcpSettings
from stacks.host_key import host_key
from stacks.passwords import GCP_PASSWORD, admin_password, random_password


@dataclass(frozen=True, kw_only=True)
class ServerArgs:
    settings: GcpSettings
    subnet: pulumi.Input[str]
    #: The VM's own service account (its email).
    service_account: pulumi.Input[str]


#: Debian 12, as Google publishes it.
IMAGE = "debian-cloud/debian-12"


#: The instance metadata key holding the stack's private SSH host key.
HOST_KEY_METADATA = "ssh-host-ed25519-key"
#: The ``startup-script``: Debian's GCE images run Google's guest agent, not cloud-init.
#: The agent generates host keys on an instance's first boot, before sshd starts
#: (google-guest-agent.service: Before=sshd.service); google-startup-scripts.service runs
#: after the agent (After=google-guest-agent.service), on every boot. So this script
#: replaces the agent's keys with the stack's one and restarts sshd when they differ,
#: and turns the agent's key generation off (``[InstanceSetup] set_host_keys = false``,
#: GoogleCloudPlatform/guest-agent: generated only while that is true, on a changed
#: instance ID). Until it has run, sshd offers the agent's keys, which a client pinning
#: the stack's key refuses before authenticating.
STARTUP_SCRIPT = f"""\
#!/bin/bash
# mlflow-server kit: install the SSH host key the stack generated (metadata
# {HOST_KEY_METADATA}); its public half is the stack's ssh_host_key output.
set -euo pipefail
umask 077
config=/etc/default/instance_configs.cfg
if ! grep -qsx 'set_host_keys = false' "$config"; then
  printf '[InstanceSetup]\\nset_host_keys = false\\n' >> "$config"
fi
url=http://metadata.google.internal/computeMetadata/v1/instance/attributes/{HOST_KEY_METADATA}
key=/etc/ssh/ssh_host_ed25519_key
new=$(mktemp /etc/ssh/.host-key.XXXXXX)
trap 'rm -f "$new" "$new.pub"' EXIT
curl -fsS --retry 10 --retry-connrefused -H 'Metadata-Flavor: Google' -o "$new" "$url"
ssh-keygen -y -f "$new" > "$new.pub"
others=$(find /etc/ssh -maxdepth 1 -name 'ssh_host_*key*' ! -name 'ssh_host_ed25519_key' \\
  ! -name 'ssh_host_ed25519_key.pub')
if cmp -s "$new" "$key" && cmp -s "$new.pub" "$key.pub" && [ -z "$others" ]; then
  exit 0
fi
chmod 600 "$new" && chmod 644 "$new.pub"
mv -f "$new.pub" "$key.pub"
mv -f "$new" "$key"
[ -z "$others" ] || rm -f $others
systemctl try-restart ssh.service
echo "installed the stack's SSH host key: $(ssh-keygen -lf "$key.pub")"
"""


def ssh_keys_metadata(user: str, keys: list[str]) -> str:
    """The ``ssh-keys`` metadata value: one ``user:key`` line per key."""
    return "\n".join(f"{user}:{key}" for key in keys)


def instance_metadata(s: GcpSettings, host_private_key: pulumi.Output[str]) -> dict:
    """The metadata of the VM, and of every instance of a group: the stack's SSH keys and
    nobody else's, no serial port, the startup script and the host key it installs."""
    return {
        "block-project-ssh-keys": "TRUE",
        "enable-oslogin": "FALSE",
        "serial-port-enable": "FALSE",
        "ssh-keys": ssh_keys_metadata(s.common.ssh_user, s.common.ssh_public_keys),
        "startup-script": STARTUP_SCRIPT,
        HOST_KEY_METADATA: host_private_key,
    }


class Server(Component):
    """The VM MLflow runs on, its SSH host key, and the MLflow admin password it is
    bootstrapped with."""

    TYPE = "mlflow-server:gcp:Server"

    def declare(self, name: str, args: ServerArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        self.host_key = host_key(f"{name}-host-key", self.child)

        self.address = gcp.compute.Address(
            f"{name}-ip",
            region=s.region,
            address_type="EXTERNAL",
            network_tier="PREMIUM",
            labels=s.labels,
            opts=self.child,
        )
        self.instance = gcp.compute.Instance(
            f"{name}-instance",
            zone=s.zone,
            machine_type=s.machine_type,
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                auto_delete=True,
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                    image=IMAGE, size=s.boot_disk_gb, type="pd-balanced", labels=s.labels
                ),
            ),
            network_interfaces=[
                gcp.compute.InstanceNetworkInterfaceArgs(
                    subnetwork=args.subnet,
                    access_configs=[
                        gcp.compute.InstanceNetworkInterfaceAccessConfigArgs(
                            nat_ip=self.address.address, network_tier="PREMIUM"
                        )
                    ],
                )
            ],
            service_account=gcp.compute.InstanceServiceAccountArgs(
                email=args.service_account,
                # Access is limited by the account's IAM roles, as Google recommends,
                # not by the legacy per-API scopes.
                scopes=["cloud-platform"],
            ),
            shielded_instance_config=gcp.compute.InstanceShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            # Login by the stack's own keys rather than OS Login: `fab bootstrap` connects as
            # the configured sshUser with those keys, with no Google identity or IAM binding
            # per operator. Project-wide keys are blocked so only the listed keys get in.
            # (An organization policy that enforces OS Login overrides this; then set the
            # keys in OS Login instead.) The host key makes the whole metadata map a
            # secret in the state and in a preview.
            metadata=instance_metadata(s, self.host_key.private_openssh),
            deletion_protection=s.deletion_protection,
            # Changing the machine type stops the VM; let the update do that.
            allow_stopping_for_update=True,
            labels=s.labels,
            opts=self.child,
        )
        password = random_password(f"{name}-admin-password", GCP_PASSWORD, self.child)
        self.admin_password = admin_password(s.common.admin_password, password.result)
        self.public_ip = self.address.address
        self.ssh_host_key = self.host_key.public_openssh
        #: The instance name, which IAP's tunnel takes, and its zone.
        self.vm_id = self.instance.name
        self.vm_zone = pulumi.Output.from_input(s.zone)
        return {
            "public_ip": self.public_ip,
            "instance": self.vm_id,
            "admin_password": self.admin_password,
            "ssh_host_key": self.ssh_host_key,
        }
