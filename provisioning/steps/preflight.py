"""Preflight: is the host fit for the kit, and can it reach what the server needs? Changes nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

from provisioning import facts
from provisioning.play import Outcome, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host, PreflightError

MIN_FREE_DISK_MB = 4096


def check(host: Host, deployment: Deployment) -> Outcome[facts.Resources]:
    """Supported OS, sudo, disk, and the database and storage endpoints reachable."""
    if not host.read(facts.PASSWORDLESS_SUDO):
        raise PreflightError(f"[{host.name}] {host.user} cannot run sudo without a password")
    release = host.read(facts.OS_RELEASE)
    if release.get("ID") != "debian" or release.get("VERSION_ID") != "12":
        raise PreflightError(
            f"[{host.name}] unsupported OS {release.get('PRETTY_NAME', 'unknown')!r}: Debian 12 is required"
        )
    resources = host.read(facts.RESOURCES)
    if resources.free_disk_mb < MIN_FREE_DISK_MB:
        raise PreflightError(
            f"[{host.name}] only {resources.free_disk_mb} MB free on /: at least {MIN_FREE_DISK_MB} MB needed"
        )
    for what, address, port in endpoints(deployment):
        if not host.read(facts.tcp_open(address, port)):
            raise PreflightError(
                f"[{host.name}] {what} at {address}:{port} is not reachable from the host "
                "(check the address, the port and the firewall between them)"
            )
    return unchanged(
        f"Debian 12, {resources.cores} cores, {resources.memory_mb} MB, "
        f"{resources.free_disk_mb} MB free",
        resources,
    )


def endpoints(deployment: Deployment) -> list[tuple[str, str, int]]:
    """(what, host, port) the VM must reach: the database, and a storage endpoint when one is set."""
    uri = urlsplit(deployment.backend_store_uri.reveal())
    found = [("the database", uri.hostname or "", uri.port or 5432)]
    for key in ("MLFLOW_S3_ENDPOINT_URL", "STORAGE_EMULATOR_HOST"):
        if key in deployment.storage_env:
            url = urlsplit(deployment.storage_env[key])
            found.append(
                (
                    "the artifact store",
                    url.hostname or "",
                    url.port or (443 if url.scheme == "https" else 80),
                )
            )
    return found
