"""Reading host state: each fact is a command plus a pure parser, tested on recorded output.

A fact's command exits 0 whenever it can read what it asks for (absence is an
answer, not an error), so ``Host.read`` treats any other exit as a failure of
the host. Steps read facts first and change only what differs.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    command: str
    parse: Callable[[str], T]
    #: Read as root (most of the kit's state is not readable by the login user).
    sudo: bool = True


# --------------------------------------------------------------------------- parsers


def parse_yes(text: str) -> bool:
    return text.strip() == "yes"


def parse_text(text: str) -> str:
    return text.strip()


def parse_words(text: str) -> list[str]:
    return text.split()


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
    """nproc, MemTotal (kB), free kB on /, and the cgroup memory limit (bytes or ``max``).

    A container's /proc/meminfo shows the machine's memory; its limit is the cgroup's
    (memory.max on cgroup v2, memory.limit_in_bytes on v1, a huge number when unlimited).
    """
    words = text.split()
    cores, mem_kb, disk_kb = (int(v) for v in words[:3])
    memory_mb = mem_kb // 1024
    if len(words) > 3 and words[3].isdigit():
        memory_mb = min(memory_mb, int(words[3]) // (1024 * 1024))
    return Resources(cores, memory_mb, disk_kb // 1024)


@dataclass(frozen=True)
class FreeSpace:
    """The free space of the filesystem that holds a path, or will hold it once created."""

    #: The path df measured: the one asked about, or its nearest existing parent.
    measured: str
    free_kb: int
    #: That filesystem's mount point.
    mount: str


def parse_free_space(text: str) -> FreeSpace:
    """The path measured, then df -Pk's "Available" (kB) and "Mounted on", one a line."""
    measured, free_kb, mount = text.strip().split("\n", 2)
    return FreeSpace(measured, int(free_kb), mount)


def parse_installed_packages(text: str) -> set[str]:
    """Packages dpkg reports as ``installed`` (not merely known or half-configured)."""
    installed = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "installed":
            installed.add(parts[0].split(":")[0])
    return installed


def parse_systemctl_show(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


@dataclass(frozen=True)
class FileState:
    exists: bool
    sha256: str = ""
    mode: str = ""
    owner: str = ""
    group: str = ""


def parse_file_state(output: str) -> FileState:
    """Parse ``stat -c '%a %U %G'`` then ``sha256sum`` output; ``missing`` when absent."""
    text = output.strip()
    if not text or text == "missing":
        return FileState(exists=False)
    lines = text.splitlines()
    mode, owner, group = lines[0].split()
    digest = lines[1].split()[0] if len(lines) > 1 else ""
    return FileState(True, digest, mode.zfill(4), owner, group)


@dataclass(frozen=True)
class PathState:
    """Mode (octal digits as stat prints them), owner and group of a path, or absent."""

    exists: bool
    mode: str = ""
    owner: str = ""
    group: str = ""


def parse_path_state(text: str) -> PathState:
    words = text.split()
    if len(words) != 3:
        return PathState(exists=False)
    return PathState(True, *words)


def parse_cloud_init_status(text: str) -> str:
    """``cloud-init status`` -> running, done, error, disabled, ... ("" without cloud-init)."""
    for line in text.splitlines():
        if line.startswith("status:"):
            return line.partition(":")[2].strip()
    return ""


def parse_processes(text: str) -> list[tuple[int, str]]:
    """``PID NAME`` lines -> [(pid, name)]."""
    found = []
    for line in text.splitlines():
        pid, _, name = line.strip().partition(" ")
        if pid.isdigit():
            found.append((int(pid), name.strip()))
    return found


def parse_json_output(text: str):
    """A program's answer: its last line of output, as JSON (None when it printed nothing)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def parse_json_file(text: str) -> dict:
    """A small JSON state file ({} when absent or unreadable)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- facts

OS_RELEASE = Fact("cat /etc/os-release", parse_os_release, sudo=False)
RESOURCES = Fact(
    "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; df -Pk / | awk 'NR==2 {print $4}'; "
    "cat /sys/fs/cgroup/memory.max 2>/dev/null"
    " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo max",
    parse_resources,
    sudo=False,
)
#: Whether the login user may run sudo without a password (asked without sudo).
PASSWORDLESS_SUDO = Fact("sudo -n true 2>/dev/null && echo yes || echo no", parse_yes, sudo=False)


CLOUD_INIT_STATUS = Fact("cloud-init status 2>/dev/null || true", parse_cloud_init_status)
#: apt's and dpkg's lock files: whoever has one open is installing or updating.
APT_LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
APT_LOCK_HOLDERS = Fact(
    "for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -qE ' -> ("
    + "|".join(APT_LOCKS)
    + ')$\' && echo "${p#/proc/} $(cat $p/comm 2>/dev/null)"; done; true',
    parse_processes,
)


def installed_packages(packages: tuple[str, ...]) -> Fact[set[str]]:
    names = " ".join(shlex.quote(p) for p in packages)
    return Fact(
        f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {names} 2>/dev/null || true",
        parse_installed_packages,
        sudo=False,
    )


def user_exists(name: str) -> Fact[bool]:
    return Fact(
        f"id -u {shlex.quote(name)} >/dev/null 2>&1 && echo yes || echo no", parse_yes, False
    )


def path_state(path: str) -> Fact[PathState]:
    q = shlex.quote(path)
    return Fact(f"stat -c '%a %U %G' {q} 2>/dev/null || echo missing", parse_path_state)


def file_state(path: str) -> Fact[FileState]:
    q = shlex.quote(path)
    return Fact(
        f"if [ -e {q} ]; then stat -c '%a %U %G' {q} && sha256sum {q}; else echo missing; fi",
        parse_file_state,
    )


def parse_sha256sums(text: str) -> dict[str, str]:
    """sha256sum's ``<sha256>  <name>`` lines as {name: sha256}."""
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            sums[name] = digest
    return sums


def sha256sums(directory: str) -> Fact[dict[str, str]]:
    """The sha256 of each file directly in ``directory`` (no dot files; {} when absent)."""
    q = shlex.quote(directory)
    return Fact(
        f"cd {q} 2>/dev/null && find . -maxdepth 1 -type f ! -name '.*' -printf '%P\\0' "
        "| xargs -0r sha256sum -- || true",
        parse_sha256sums,
    )


def free_space(path: str) -> Fact[FreeSpace]:
    """Free space where ``path`` is; where it will be, when it does not exist yet (read as
    root: a parent the login user may not enter could hide a mount point below it)."""
    q = shlex.quote(path)
    return Fact(
        f'p={q}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; echo "$p"; '
        "df -Pk \"$p\" | awk 'NR==2 {print $4; print $6}'",
        parse_free_space,
    )


def exists(path: str) -> Fact[bool]:
    return Fact(f"test -e {shlex.quote(path)} && echo yes || echo no", parse_yes)


def executable(path: str) -> Fact[bool]:
    return Fact(f"test -x {shlex.quote(path)} && echo yes || echo no", parse_yes)


def symlink_target(link: str) -> Fact[str]:
    """Where ``link`` points ("" when it is no symlink)."""
    return Fact(f"readlink {shlex.quote(link)} || true", parse_text)


def directory_listing(path: str) -> Fact[list[str]]:
    return Fact(f"ls {shlex.quote(path)} 2>/dev/null || true", parse_words)


def file_text(path: str) -> Fact[str]:
    """A file's content, stripped ("" when absent); for small files such as keys."""
    return Fact(f"cat {shlex.quote(path)} 2>/dev/null || true", parse_text)


def certificate_names(path: str) -> Fact[str]:
    """The subjectAltName extension of a PEM certificate as openssl prints it ("" if none)."""
    q = shlex.quote(path)
    return Fact(f"openssl x509 -in {q} -noout -ext subjectAltName 2>/dev/null || true", parse_text)


def unit_enabled(unit: str) -> Fact[str]:
    """``enabled``, ``disabled``, ... ("" for a unit systemd does not know)."""
    return Fact(f"systemctl is-enabled {unit} 2>/dev/null || true", parse_text, sudo=False)


def unit_active(unit: str) -> Fact[str]:
    return Fact(f"systemctl is-active {unit} || true", parse_text, sudo=False)


def unit_properties(unit: str, *names: str) -> Fact[dict[str, str]]:
    props = " ".join(f"-p {name}" for name in names)
    return Fact(f"systemctl show {props} {unit}", parse_systemctl_show, sudo=False)


def tcp_open(host: str, port: int) -> Fact[bool]:
    """Whether the host opens a TCP connection to ``host:port`` within 5 s."""
    return Fact(
        f"timeout 5 bash -c '</dev/tcp/{host}/{int(port)}' 2>/dev/null && echo yes || echo no",
        parse_yes,
        sudo=False,
    )


def env_file_value(path: str, name: str) -> Fact[str]:
    """One double-quoted value of a systemd environment file ("" when absent)."""
    return Fact(f"sed -n 's/^{name}=\"\\(.*\\)\"$/\\1/p' {path} 2>/dev/null || true", parse_text)


def journal(units: str, lines: int, output: str = "short-iso") -> Fact[str]:
    """The last ``lines`` journal lines of ``units`` (``-u A -u B`` arguments)."""
    return Fact(
        f"journalctl {units} -n {int(lines)} --no-pager -o {output} 2>/dev/null || true",
        parse_text,
    )


def json_output(command: str) -> Fact:
    """A kit program's JSON answer (its last line of output)."""
    return Fact(command, parse_json_output)


def json_file(path: str) -> Fact[dict]:
    return Fact(f"cat {shlex.quote(path)} 2>/dev/null || true", parse_json_file)


# The servers' own reads and the model endpoints' live in their modules; facts.X finds them.
from provisioning.facts.endpoints import *  # noqa: E402, F403
from provisioning.facts.server import *  # noqa: E402, F403
