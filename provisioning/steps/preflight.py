"""Preflight: is the host fit for the kit, and can it reach what the server needs? Changes nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

from provisioning import facts
from provisioning.play import Outcome, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host, PreflightError

MIN_FREE_DISK_MB = 4096


def check(host: Host, deployment: Deployment) -> Outcome[facts.Resources]:
    """Supported OS, sudo, disk, room for the servers' temporary files, and the database and
    storage endpoints reachable."""
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
    tmp = tmp_space(host, deployment.server_tmp_dir, deployment.server_tmp_min_free_gib)
    for what, address, port in endpoints(deployment):
        if not host.read(facts.tcp_open(address, port)):
            raise PreflightError(
                f"[{host.name}] {what} at {address}:{port} is not reachable from the host "
                "(check the address, the port and the firewall between them)"
            )
    return unchanged(
        f"Debian 12, {resources.cores} cores, {resources.memory_mb} MB, "
        f"{resources.free_disk_mb} MB free, {_gib(tmp.free_kb)} GiB for temporary files",
        resources,
    )


def tmp_space(host: Host, path: str, min_free_gib: int) -> facts.FreeSpace:
    """The free space where the servers' temporary directory is; refused below ``min_free_gib``."""
    space = host.read(facts.free_space(path))
    if space.free_kb < min_free_gib * 1024 * 1024:
        where = (
            path
            if space.measured == path
            else f"{path} (not there yet, measured at {space.measured})"
        )
        raise PreflightError(
            f"[{host.name}] server_tmp_dir {where}: only {_gib(space.free_kb)} GiB free on "
            f"{space.mount}, server_tmp_min_free_gib is {min_free_gib} (a proxied download "
            "not streamed lands there whole): free space there, or set server_tmp_dir to a "
            "larger disk"
        )
    return space


def _gib(kb: int) -> str:
    """kB as GiB with one decimal, rounded down (7.99 GiB is no 8.0 to compare with 8)."""
    return f"{kb * 10 // (1024 * 1024) / 10:.1f}"


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
