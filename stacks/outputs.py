"""The stack outputs (stacks/contract.py), built in one place for both clouds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pulumi

from stacks import contract
from stacks.config import CommonSettings


class ServerOutputs(Protocol):
    """What both clouds' Server components expose."""

    public_ip: pulumi.Output[str]
    admin_password: pulumi.Output[str]
    #: The VM as its cloud's tunnel names it, and its zone.
    vm_id: pulumi.Output[str]
    vm_zone: pulumi.Output[str]
    #: The public half of the host key the stack generated, ``ssh-ed25519 AAAA...``.
    ssh_host_key: pulumi.Output[str]


@dataclass(frozen=True, kw_only=True)
class GroupOutputs:
    """What both clouds' group and load balancer give the outputs with ``topology: group``."""

    #: The load balancer's public address (GCP IPv4 address, AWS DNS name).
    lb_address: pulumi.Output[str]
    #: contract.HOSTS: one entry per group, its instances left to bootstrap to find.
    hosts: pulumi.Output[list]
    flask_secret_key: pulumi.Output[str]
    kek_passphrase: pulumi.Output[str]


class DatabaseOutputs(Protocol):
    """What both clouds' Database components expose."""

    backend_store_uri: pulumi.Output[str]
    max_connections: int
    #: The database as its cloud's API names it.
    instance_id: pulumi.Output[str]


def contract_outputs(
    common: CommonSettings,
    *,
    server: ServerOutputs,
    database: DatabaseOutputs,
    artifacts_destination: pulumi.Input[str],
    region: str,
    ssh_access: str,
    cloud_only: dict[str, pulumi.Input] | None = None,
    group: GroupOutputs | None = None,
) -> dict[str, pulumi.Output]:
    """Every output of contract.expected_outputs(common.cloud, common.topology), in that
    order; ``cloud_only`` holds the outputs only this cloud exports
    (contract.CLOUD_OUTPUTS); ``group`` the group's, with ``topology: group``."""
    address = server.public_ip if group is None else group.lb_address
    host = pulumi.Output.from_input(common.domain or address)
    values = {
        contract.CLOUD: common.cloud,
        contract.HOST: host,
        contract.SSH_USER: common.ssh_user,
        contract.TRACKING_URL: host.apply(lambda h: f"https://{h}"),
        contract.BACKEND_STORE_URI: database.backend_store_uri,
        contract.ARTIFACTS_DESTINATION: artifacts_destination,
        contract.ADMIN_PASSWORD: pulumi.Output.secret(server.admin_password),
        contract.ENVIRONMENT: common.environment,
        contract.VM_ID: server.vm_id,
        contract.VM_ZONE: server.vm_zone,
        contract.REGION: region,
        contract.SSH_ACCESS: ssh_access,
        contract.SSH_HOST_KEY: server.ssh_host_key,
        contract.MLFLOW_VERSION: common.mlflow_version,
        contract.TLS_MODE: common.tls_mode,
        contract.DOMAIN: common.domain or "",
        contract.ACME_EMAIL: common.acme_email or "",
        contract.DB_MAX_CONNECTIONS: database.max_connections,
        contract.DB_INSTANCE_ID: database.instance_id,
        **(cloud_only or {}),
    }
    if group is not None:
        values.update(
            {
                contract.TOPOLOGY: common.topology,
                contract.HOSTS: group.hosts,
                contract.LB_ADDRESS: group.lb_address,
                contract.URL: values[contract.TRACKING_URL],
                contract.FLASK_SECRET_KEY: pulumi.Output.secret(group.flask_secret_key),
                contract.KEK_PASSPHRASE: pulumi.Output.secret(group.kek_passphrase),
            }
        )
    if tuple(values) != contract.expected_outputs(common.cloud, common.topology):
        raise ValueError(f"{common.cloud} outputs {list(values)} are not the contract's")
    return {name: pulumi.Output.from_input(value) for name, value in values.items()}
