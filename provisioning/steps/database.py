"""The database's certificate: installed for the servers, and checked before they change."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

from provisioning import files
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import db_ca_path
from provisioning.settings import Deployment
from provisioning.steps import preflight
from provisioning.transport import Host


def certificate(host: Host, deployment: Deployment) -> Outcome[None]:
    """The CA the servers check the database against, and the check itself, before any change
    to the servers: a database whose certificate does not verify stops the play here."""
    address, port = preflight.endpoints(deployment)[0][1:]
    if deployment.db_tls == "require":
        return unchanged(f"{address}:{port} encrypted, its certificate unchecked (db_tls: require)")
    ca = db_ca_path(deployment)
    installed = False
    if deployment.db_ca_cert_file or deployment.db_ca_pem:
        pem = deployment.db_ca_pem or Path(deployment.db_ca_cert_file).read_text()
        installed = files.ensure_file(host, ca, pem, mode="0644")
    elif deployment.db_ca_url:
        fetched = host.run(
            f"curl -fsSL --retry 3 -o {ca}.kit-new {shlex.quote(deployment.db_ca_url)} && "
            f"if cmp -s {ca}.kit-new {ca}; then rm -f {ca}.kit-new; echo same; "
            f"else chmod 644 {ca}.kit-new && mv -f {ca}.kit-new {ca}; echo new; fi",
            timeout=120,
        )
        installed = fetched.stdout.strip() == "new"
    name = f"-verify_ip {address}" if is_ip(address) else f"-verify_hostname {address}"
    check = (
        f"echo | timeout 20 openssl s_client -starttls postgres -connect {address}:{port} "
        f"-servername {address} {name} -verify_return_error -CAfile {ca} 2>&1"
    )
    result = host.run(check, check=False)
    if result.exited != 0:
        reasons = [line for line in result.stdout.splitlines() if "error" in line.lower()]
        raise host.error(
            f"openssl s_client -starttls postgres -connect {address}:{port}",
            result.exited,
            f"the database at {address}:{port} presents a certificate that does not verify "
            f"against {ca} for the name {address} (db_tls: verify-full): "
            + ("; ".join(reasons[:3]) or result.stdout.strip()[-300:])
            + ". Give the database's CA (db_ca_cert_file or db_ca_url), or db_tls: require.",
        )
    source = (
        deployment.db_ca_cert_file
        or deployment.db_ca_url
        or ("the stack's database CA" if deployment.db_ca_pem else "the system's CAs")
    )
    detail = f"{address}:{port} verified against {source}"
    return changed(detail) if installed else unchanged(detail)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
