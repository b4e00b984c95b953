"""What a stack's outputs say about reaching and configuring its server (pure functions).

``fab bootstrap --stack NAME`` builds its Deployment from the stack outputs
(stacks/contract.py). Two things there are more than connection data:

- ``ssh_access`` says whether port 22 is open (``cidrs``) or the VM is reached only
  through GCP IAP TCP forwarding (``iap``) or AWS Session Manager
  (``session-manager``); with ``vm_id``, ``vm_zone``, ``region`` and ``gcp_project``
  that is enough to write the ProxyCommand, so the operator need not guess it;
- ``mlflow_version``, ``tls_mode``, ``domain`` and ``acme_email`` are the server
  settings the stack holds, which bootstrap must apply rather than its defaults, and
  ``db_max_connections`` the database's connection limit, which the servers' connection
  pools are sized within;
- ``ssh_host_key`` is the VM's SSH host key, which the stack generated and installed at
  first boot: bootstrap pins it, so no other key is accepted;
- ``db_ca_pem`` (GCP: the Cloud SQL server CA certificates) or ``db_ca_url`` (AWS: RDS's
  regional CA bundle) is what the servers verify the database's certificate against.

Stacks deployed before these outputs existed lack them; then nothing is derived.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stacks import contract

#: The ``ssh_tunnel`` setting: ``auto`` tunnels exactly when the stack has no SSH port
#: open; ``direct`` never tunnels; ``iap`` / ``session-manager`` always do.
TUNNEL_CHOICES = ("auto", "direct", "iap", "session-manager")
#: The tunnel each cloud offers.
CLOUD_TUNNEL = {"gcp": "iap", "aws": "session-manager"}
#: sshd's port on the VM, which the tunnel forwards to.
VM_SSH_PORT = 22
#: Stack output -> the bootstrap setting it becomes (the same name).
SERVER_SETTINGS = {
    contract.MLFLOW_VERSION: "mlflow_version",
    contract.TLS_MODE: "tls_mode",
    contract.DOMAIN: "domain",
    contract.ACME_EMAIL: "acme_email",
    contract.DB_MAX_CONNECTIONS: "db_max_connections",
    contract.SSH_HOST_KEY: "ssh_host_key",
    contract.DB_CA_PEM: "db_ca_pem",
    contract.DB_CA_URL: "db_ca_url",
}
#: Operator settings that say how the host's key is known: any of them replaces the
#: stack's ``ssh_host_key`` (e.g. for a VM created before the stack generated its key).
HOST_KEY_SETTINGS = ("ssh_host_key", "known_hosts_file")
#: Operator settings that name the database's CA: any of them replaces the stack's.
DB_CA_SETTINGS = ("db_ca_cert_file", "db_ca_url", "db_ca_pem")


class StackAccessError(ValueError):
    """The outputs cannot give what was asked; ``key`` names the setting or output."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {value!r}; allowed: {allowed}")


def tunnel_for(outputs: Mapping[str, Any], tunnel: str = "auto") -> str | None:
    """``iap``, ``session-manager`` or None (connect directly), for ``tunnel``."""
    if tunnel not in TUNNEL_CHOICES:
        raise StackAccessError("ssh_tunnel", tunnel, "one of " + ", ".join(TUNNEL_CHOICES))
    cloud = outputs.get(contract.CLOUD)
    if tunnel == "direct":
        return None
    if tunnel == "auto":
        access = outputs.get(contract.SSH_ACCESS)
        return access if access in ("iap", "session-manager") else None
    if CLOUD_TUNNEL.get(cloud) != tunnel:
        raise StackAccessError(
            "ssh_tunnel", tunnel, f"{CLOUD_TUNNEL.get(cloud, 'direct')} for a {cloud} stack"
        )
    return tunnel


def proxy_command(outputs: Mapping[str, Any], tunnel: str = "auto") -> str | None:
    """The SSH ProxyCommand for the stack's VM, or None when SSH goes direct.

    Example: ``gcloud compute start-iap-tunnel mlflow-vm-instance-5e2a9c1 22
    --listen-on-stdin --zone europe-west1-b --project my-project-id``.
    """
    kind = tunnel_for(outputs, tunnel)
    if kind is None:
        return None
    needed = (contract.VM_ID, contract.VM_ZONE, contract.GCP_PROJECT)
    if kind == "session-manager":
        needed = (contract.VM_ID, contract.REGION)
    missing = [name for name in needed if not outputs.get(name)]
    if missing:
        raise StackAccessError(
            missing[0],
            None,
            f"present in the stack outputs to tunnel through {kind} (run `pulumi up` with "
            "this version of the kit, or give ssh_proxy_command yourself)",
        )
    if kind == "iap":
        return (
            f"gcloud compute start-iap-tunnel {outputs[contract.VM_ID]} {VM_SSH_PORT}"
            f" --listen-on-stdin --zone {outputs[contract.VM_ZONE]}"
            f" --project {outputs[contract.GCP_PROJECT]}"
        )
    return (
        f"aws ssm start-session --target {outputs[contract.VM_ID]}"
        f" --document-name AWS-StartSSHSession --parameters portNumber={VM_SSH_PORT}"
        f" --region {outputs[contract.REGION]}"
    )


def server_settings(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Bootstrap settings the stack holds: mlflow_version, tls_mode, domain, acme_email,
    ssh_host_key, db_ca_pem or db_ca_url (strings) and db_max_connections (an integer).

    Empty or absent outputs (and a connection limit of 0, which the stack exports for a
    database class it does not know) give nothing, so bootstrap's own defaults apply.
    """
    limit = outputs.get(contract.DB_MAX_CONNECTIONS)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StackAccessError(
            contract.DB_MAX_CONNECTIONS, limit, "a whole number of connections (0: not known)"
        )
    for output in (contract.SSH_HOST_KEY, contract.DB_CA_PEM, contract.DB_CA_URL):
        value = outputs.get(output)
        if value is not None and not isinstance(value, str):
            raise StackAccessError(output, value, "a string output")
    return {
        setting: outputs[output]
        for output, setting in SERVER_SETTINGS.items()
        if outputs.get(output)
    }


def stack_overrides(
    outputs: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Overrides for ``deployment_from_outputs``: what the stack says, then ``settings``.

    ``settings`` are the operator's own (a settings file, ``fab -H``); they win. Its
    ``ssh_tunnel`` key (see TUNNEL_CHOICES) is consumed here; an ``ssh_proxy_command``
    there replaces the derived one; a host key setting (HOST_KEY_SETTINGS) replaces the
    stack's host key, and a database CA setting (DB_CA_SETTINGS) the stack's CA.
    """
    settings = dict(settings or {})
    tunnel = settings.pop("ssh_tunnel", "auto")
    derived: dict[str, Any] = server_settings(outputs)
    for given, replaced in (
        (HOST_KEY_SETTINGS, ("ssh_host_key",)),
        (DB_CA_SETTINGS, DB_CA_SETTINGS),
    ):
        if any(key in settings for key in given):
            for key in replaced:
                derived.pop(key, None)
    # A group's vm_id names the group, not a VM: each of its servers gets its own tunnel
    # (provisioning.group_instances, the host_proxy_commands setting).
    group = outputs.get(contract.TOPOLOGY) == "group"
    if "ssh_proxy_command" not in settings and not group:
        command = proxy_command(outputs, tunnel)
        if command:
            derived["ssh_proxy_command"] = command
    return {**derived, **settings}
