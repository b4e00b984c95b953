"""The server: a Shielded Debian 12 VM with its own service account and a static address,
and the MLflow admin password it is bootstrapped with."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.settings import GcpSettings
from stacks.passwords import GCP_PASSWORD, random_password


@dataclass(frozen=True, kw_only=True)
class ServerArgs:
    settings: GcpSettings
    subnet: pulumi.Input[str]
    #: The VM's own service account (its email).
    service_account: pulumi.Input[str]


#: Debian 12, as Google publishes it.
IMAGE = "debian-cloud/debian-12"


def ssh_keys_metadata(user: str, keys: list[str]) -> str:
    """The ``ssh-keys`` metadata value: one ``user:key`` line per key."""
    return "\n".join(f"{user}:{key}" for key in keys)


class Server(Component):
    """The VM MLflow runs on, and the MLflow admin password it is bootstrapped with."""

    TYPE = "mlflow-server:gcp:Server"

    def declare(self, name: str, args: ServerArgs) -> dict[str, pulumi.Input]:
        s = args.settings

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
            # keys in OS Login instead.)
            metadata={
                "block-project-ssh-keys": "TRUE",
                "enable-oslogin": "FALSE",
                "serial-port-enable": "FALSE",
                "ssh-keys": ssh_keys_metadata(s.common.ssh_user, s.common.ssh_public_keys),
            },
            deletion_protection=s.deletion_protection,
            # Changing the machine type stops the VM; let the update do that.
            allow_stopping_for_update=True,
            labels=s.labels,
            opts=self.child,
        )
        password = random_password(f"{name}-admin-password", GCP_PASSWORD, self.child)
        self.admin_password = pulumi.Output.secret(password.result)
        self.public_ip = self.address.address
        #: The instance name, which IAP's tunnel takes, and its zone.
        self.vm_id = self.instance.name
        self.vm_zone = pulumi.Output.from_input(s.zone)
        return {
            "public_ip": self.public_ip,
            "instance": self.vm_id,
            "admin_password": self.admin_password,
        }
