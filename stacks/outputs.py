"""The stack outputs (stacks/contract.py), built in one place for both clouds."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from stacks import contract
from stacks.config import CommonSettings


@dataclass(frozen=True, kw_only=True)
class Exports:
    """What a cloud's components give the contract; the rest comes from the settings."""

    public_ip: pulumi.Input[str]
    backend_store_uri: pulumi.Output[str]
    artifacts_destination: pulumi.Input[str]
    admin_password: pulumi.Input[str]
    #: The VM as its cloud's tunnel names it, and its zone.
    vm_id: pulumi.Input[str]
    vm_zone: pulumi.Input[str]
    region: str
    #: One of contract.SSH_ACCESS_MODES.
    ssh_access: str
    db_max_connections: int
    #: Outputs only this cloud exports (contract.CLOUD_OUTPUTS).
    cloud_only: dict[str, pulumi.Input]


def contract_outputs(common: CommonSettings, exports: Exports) -> dict[str, pulumi.Output]:
    """Every output of contract.expected_outputs(common.cloud), in that order."""
    host = pulumi.Output.from_input(common.domain or exports.public_ip)
    values = {
        contract.CLOUD: common.cloud,
        contract.HOST: host,
        contract.SSH_USER: common.ssh_user,
        contract.TRACKING_URL: host.apply(lambda h: f"https://{h}"),
        contract.BACKEND_STORE_URI: exports.backend_store_uri,
        contract.ARTIFACTS_DESTINATION: exports.artifacts_destination,
        contract.ADMIN_PASSWORD: pulumi.Output.secret(exports.admin_password),
        contract.ENVIRONMENT: common.environment,
        contract.VM_ID: exports.vm_id,
        contract.VM_ZONE: exports.vm_zone,
        contract.REGION: exports.region,
        contract.SSH_ACCESS: exports.ssh_access,
        contract.MLFLOW_VERSION: common.mlflow_version,
        contract.TLS_MODE: common.tls_mode,
        contract.DOMAIN: common.domain or "",
        contract.ACME_EMAIL: common.acme_email or "",
        contract.DB_MAX_CONNECTIONS: exports.db_max_connections,
        **exports.cloud_only,
    }
    if tuple(values) != contract.expected_outputs(common.cloud):
        raise ValueError(f"{common.cloud} outputs {list(values)} are not the contract's")
    return {name: pulumi.Output.from_input(value) for name, value in values.items()}
