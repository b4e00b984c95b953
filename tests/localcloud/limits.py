"""Memory and CPU limits of a local host, like a cloud machine type's, and its own cgroups.

Every host runs in cgroups of its own (``mlflow-kit/mlk-host-N`` in each
hierarchy this machine mounts), so that two hosts' systemd never share a
cgroup; with ``Limits`` those cgroups also cap memory (no swap) and CPU time.
The supervisor creates them, moves systemd-nspawn into them before it starts,
and removes them when the host is gone.

nspawn gives the guest a cgroup namespace whose root is the host's cgroup (on
cgroup v2 nspawn's ``payload`` child of it, which gets the same limits), so the
guest reads its own limit at the root of its cgroup tree:

- cgroup v2: ``/sys/fs/cgroup/memory.max`` (bytes) and ``/sys/fs/cgroup/cpu.max``
  (``quota period``);
- cgroup v1: ``/sys/fs/cgroup/memory/memory.limit_in_bytes`` and
  ``/sys/fs/cgroup/cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us``.

``/proc/meminfo`` and ``nproc`` inside the guest still show the machine's memory
and cores. On a real VM neither file holds a limit (the root cgroup has no
``memory.max``; v1's root shows about 2^63), and ``MemTotal`` is the VM's memory.
So a sizing rule that works on both is: the smaller of ``MemTotal`` and the
cgroup root's limit when that file exists and holds a number.

What a real machine type does that this does not:

- the VM's kernel, page tables and firmware take part of the memory before
  userspace starts (a 2 GB e2-small shows about 1.9 GB ``MemTotal``); here the
  whole limit is the guest's, and the page cache counts against it;
- shared-core and burstable types (e2-small, t3.*) run at a fraction of their
  vCPUs sustained (e2-small 0.5 vCPU, t3.medium 20% baseline) and burst on
  credits; here the quota is the vCPU count, all the time;
- an out-of-memory kill happens in the VM's kernel, which picks from every
  process; here the cgroup's OOM killer picks inside the host's cgroup, and the
  kernel log is the machine's, not the guest's (``dmesg`` in the guest shows nothing);
- disk size and IOPS are not limited.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "mlflow-kit"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpus: float

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def cpu_quota_us(self) -> int:
        return int(self.cpus * CPU_PERIOD_US)

    def as_args(self) -> list[str]:
        return [f"--memory-mb={self.memory_mb}", f"--cpus={self.cpus}"]


#: Memory (MiB, as the clouds count it) and vCPUs of the machine types the stacks use.
MACHINE_TYPES = {
    "e2-small": Limits(2048, 2),
    "e2-medium": Limits(4096, 2),
    "e2-standard-2": Limits(8192, 2),
    "t3.small": Limits(2048, 2),
    "t3.medium": Limits(4096, 2),
    "t3.large": Limits(8192, 2),
}
E2_SMALL = MACHINE_TYPES["e2-small"]


def for_machine_type(machine_type: str) -> Limits:
    try:
        return MACHINE_TYPES[machine_type]
    except KeyError:
        raise ValueError(
            f"machine type {machine_type!r} has no local limits; known: {', '.join(MACHINE_TYPES)}"
            " (or pass limits= explicitly)"
        ) from None


def _hierarchies() -> dict[str, Path]:
    """Where this machine mounts each cgroup hierarchy: v1 controllers by name, v2 as 'unified'."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _source, target, fstype, options = line.split()[:4]
        if not target.startswith(str(CGROUP_ROOT)):
            continue
        if fstype == "cgroup2":
            found["unified"] = Path(target)
        elif fstype == "cgroup":
            opts = options.split(",")
            for name in ("memory", "cpu"):
                if name in opts:
                    found[name] = Path(target)
            if "name=systemd" in opts:
                found["name=systemd"] = Path(target)
    return found


@dataclass
class HostCgroups:
    """The cgroups of one host in every hierarchy, with ``limits`` written into them."""

    name: str
    limits: Limits | None = None

    def directories(self) -> dict[str, Path]:
        return {kind: root / PARENT / self.name for kind, root in _hierarchies().items()}

    def create(self) -> None:
        hierarchies = _hierarchies()
        unified_controllers = hierarchies.get("unified")
        v2_limits = bool(
            self.limits
            and unified_controllers
            and (unified_controllers / "cgroup.controllers").read_text().split()
            and "memory" not in hierarchies
        )
        if self.limits and not v2_limits and "memory" not in hierarchies:
            raise RuntimeError("no memory cgroup controller on this machine: cannot limit a host")
        for kind, root in hierarchies.items():
            directory = root / PARENT / self.name
            if kind == "unified" and v2_limits:
                _enable(root, ("memory", "cpu"))
                directory.parent.mkdir(exist_ok=True)
                _enable(directory.parent, ("memory", "cpu"))
            directory.mkdir(parents=True, exist_ok=True)
            if not self.limits:
                continue
            if kind == "memory":
                _write(directory / "memory.limit_in_bytes", self.limits.memory_bytes)
                # No swap, as on the clouds' Debian images (present only with swap accounting).
                if (directory / "memory.memsw.limit_in_bytes").exists():
                    _write(directory / "memory.memsw.limit_in_bytes", self.limits.memory_bytes)
            elif kind == "cpu":
                _write(directory / "cpu.cfs_period_us", CPU_PERIOD_US)
                _write(directory / "cpu.cfs_quota_us", self.limits.cpu_quota_us)
            elif kind == "unified" and v2_limits:
                self._write_v2(directory)

    def _write_v2(self, directory: Path) -> None:
        assert self.limits
        _write(directory / "memory.max", self.limits.memory_bytes)
        if (directory / "memory.swap.max").exists():
            _write(directory / "memory.swap.max", 0)
        _write(directory / "cpu.max", f"{self.limits.cpu_quota_us} {CPU_PERIOD_US}")

    def attach(self, pid: int) -> None:
        """Move ``pid`` into this host's cgroups (called in the child before it execs nspawn)."""
        for directory in self.directories().values():
            (directory / "cgroup.procs").write_text(f"{pid}\n")

    def mirror_into_payload(self, timeout: float = 15) -> None:
        """cgroup v2: nspawn moves the guest into ``payload``; give it the limits too, so
        the guest sees them at the root of its cgroup namespace."""
        directory = self.directories().get("unified")
        if not self.limits or directory is None or "memory" in _hierarchies():
            return
        payload = directory / "payload"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Controllers can be enabled for children only once nspawn has left the
            # cgroup itself for its "supervisor" child.
            if payload.exists() and not (directory / "cgroup.procs").read_text().strip():
                with contextlib.suppress(OSError):
                    _enable(directory, ("memory", "cpu"))
                    self._write_v2(payload)
                    return
            time.sleep(0.1)
        print(f"limits: could not copy the limits into {payload}", flush=True)

    def remove(self, timeout: float = 10) -> None:
        """Remove the (empty) cgroups, deepest first."""
        for directory in self.directories().values():
            if not directory.exists():
                continue
            deadline = time.monotonic() + timeout
            for sub in sorted(directory.rglob("*/"), key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)


def _enable(directory: Path, controllers: tuple[str, ...]) -> None:
    enabled = (directory / "cgroup.subtree_control").read_text().split()
    missing = [c for c in controllers if c not in enabled]
    if missing:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def _write(path: Path, value: object) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)
