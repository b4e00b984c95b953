"""Reading host state: each fact is a command plus a pure parser tested on recorded output."""

from __future__ import annotations

from dataclasses import dataclass

OS_RELEASE = "cat /etc/os-release"
RESOURCES = "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; df -Pk / | awk 'NR==2 {print $4}'"
PACKAGES = "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' {packages} 2>/dev/null || true"
UNITS = "systemctl list-units --all --plain --no-legend --no-pager 'mlflow-server@*' || true"


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


@dataclass(frozen=True)
class Resources:
    cores: int
    memory_mb: int
    free_disk_mb: int


def parse_resources(text: str) -> Resources:
    cores, mem_kb, disk_kb = (int(v) for v in text.split()[:3])
    return Resources(cores, mem_kb // 1024, disk_kb // 1024)


def parse_installed_packages(text: str) -> set[str]:
    """Packages dpkg reports as ``installed`` (not merely known or half-configured)."""
    installed = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "installed":
            installed.add(parts[0].split(":")[0])
    return installed


def parse_server_instances(text: str) -> dict[int, str]:
    """``systemctl list-units`` lines for mlflow-server@PORT.service -> {port: active state}."""
    instances = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("mlflow-server@"):
            continue
        port = parts[0].removeprefix("mlflow-server@").removesuffix(".service")
        if port.isdigit() and len(parts) >= 3:
            instances[int(port)] = parts[2]
    return instances


def parse_systemctl_show(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def server_instances_for(resources: Resources) -> int:
    """One single-worker server per core, as memory allows (about 400 MB each), 1 to 8.

    Separate single-worker processes behind nginx keep each upstream connection
    on its own socket: uvicorn with ``--workers`` above 1 shares one listening
    socket and adds about 40 ms per request on reused connections (DESIGN.md).
    """
    by_memory = max(1, (resources.memory_mb - 512) // 400)
    return max(1, min(resources.cores, by_memory, 8))
