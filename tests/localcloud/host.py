"""A fresh Debian 12 host: a private copy of the image booted by systemd-nspawn.

The host has its own network namespace (a veth pair: the machine is ``.1``,
the guest ``.2`` of a /30, NATed outwards unless ``block_egress``: ``link.py``), its
own root filesystem (it cannot see the machine's files; an overlay of the image under a writable layer of its own, so a
new host or a clone copies nothing), real systemd as PID 1 and sshd, and cgroups of its own
(optionally with memory and CPU limits, see ``limits.py``). ``systemctl reboot``
inside it really reboots it: nspawn exits with status 133 and the supervisor
boots the same root filesystem again, so enabled units come back.

Two flavours: ``plain`` (the default) gets its login user ``admin``, its keys and
its host keys written into the copy before it boots, with cloud-init disabled
and apt's timers masked, so it is ready and idle at once; ``aws`` and ``gcp``
boot like a fresh cloud VM (``cloudlike.py``): cloud-init creates the users and
host keys, apt is busy, sshd comes late.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.localcloud.image import LOGIN_USER
from tests.localcloud.limits import HostCgroups, Limits
from tests.localcloud.link import Link
from tests.localcloud.procs import alive, run, spawn, stop, wait_for


@dataclass
class FreshHost:
    slot: int
    run_dir: Path
    tied: bool
    supervisor_pid: int = 0
    #: ``plain``, or ``aws`` / ``gcp`` for a host that boots like that cloud's VM.
    flavour: str = "plain"
    #: The login user with sudo: ``admin`` on plain hosts, the stack's ``ssh_user`` otherwise.
    user: str = LOGIN_USER
    limits: Limits | None = None
    #: cloud-init's instance ID (cloud-like hosts).
    instance_id: str = ""
    #: The host key its stack declares (``ssh_host_key`` output, ``type base64``):
    #: known_hosts pins it alone, as ``fab bootstrap --stack`` does, instead of the
    #: keys found on the root file system.
    stack_host_key: str = ""
    #: The read-only layers under the host's own writable one, topmost first: the image,
    #: and above it the layers frozen from the host it was cloned from (``create_from``).
    lowers: list[str] = field(default_factory=list)
    #: The layers a copy stacks on while this host keeps running (``LocalCloud.snapshot``):
    #: the host as it was then. Empty: a copy powers the host off and freezes it as it is.
    snapshot: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"mlk-host-{self.slot}"

    @property
    def link(self) -> Link:
        return Link(self.slot)

    @property
    def netns(self) -> str:
        return self.link.netns

    @property
    def address(self) -> str:
        """The host's own address, as a VM's would be."""
        return self.link.guest_address

    def block_egress(self) -> None:
        """Cut the host off from everything but the machine, as a VM in a private network
        without NAT: the local cloud's services still answer; PyPI, the Debian mirror and
        the nameserver are refused (connections at once, name lookups within about 5 s:
        ``Link.block_egress``). Idempotent; lasts across reboots, until ``allow_egress``
        or ``destroy``; a clone starts open."""
        self.link.block_egress()

    def allow_egress(self) -> None:
        """Undo ``block_egress``: the host reaches the world through the machine again."""
        self.link.allow_egress()

    def egress_blocked(self) -> bool:
        return self.link.egress_blocked()

    @property
    def rootfs(self) -> Path:
        return self.run_dir / "rootfs"

    @property
    def upper(self) -> Path:
        """What this host wrote: the writable layer of its overlay root file system."""
        return self.run_dir / "upper"

    @property
    def layers_dir(self) -> Path:
        """Frozen layers, shared by a host and its clones (in the local cloud's directory)."""
        return self.run_dir.parent / "layers"

    @property
    def key_file(self) -> Path:
        return self.run_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "known_hosts"

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    # -- creation -------------------------------------------------------------------------

    def create(self, image_rootfs: Path, *, plain: bool = True) -> None:
        """Copy the image and give the copy its own identity, login key and network.

        ``plain``: also its login user with the key, and host keys, with cloud-init
        disabled and apt's timers masked. Otherwise the caller seeds cloud-init
        (``cloudlike.prepare``), which does that work at first boot.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lowers = [str(image_rootfs)]
        self.mount()
        (self.rootfs / "etc/hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        )
        self._set_identity()
        resolv = self.rootfs / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text(_host_nameservers())
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"localcloud-{self.name}",
                "-f",
                str(self.key_file),
            ]
        )
        if plain:
            self._make_plain()
        self.link.create()

    def create_from(self, source: FreshHost) -> None:
        """A copy of ``source``'s (powered-off) root file system, with this slot's name,
        address and a new machine ID, but ``source``'s host keys and login key.

        Nothing is copied: ``source``'s writable layer is frozen into a read-only one
        that both stack their own writable layers on (``freeze``). A source with a
        ``snapshot`` may be running: the copy stacks on the snapshot's layers, not on what
        the source wrote since.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not source.snapshot:
            source.freeze()
        self.lowers = list(source.snapshot or source.lowers)
        self.mount()
        for key in (source.key_file, source.key_file.with_suffix(".pub")):
            run(["cp", "-p", str(key), str(self.run_dir / key.name)])
        self.flavour, self.user, self.instance_id = source.flavour, source.user, source.instance_id
        self._set_identity()
        if self.flavour != "plain":
            # The same instance (cloud-init runs nothing per instance again) with a new
            # name: re-read from the seed, not from cloud-init's cache of the source's.
            meta = self.rootfs / "var/lib/cloud/seed/nocloud/meta-data"
            meta.write_text(
                "\n".join(
                    f"local-hostname: {self.name}" if line.startswith("local-hostname:") else line
                    for line in meta.read_text().splitlines()
                )
                + "\n"
            )
            (self.rootfs / "var/lib/cloud/instance/obj.pkl").unlink(missing_ok=True)
        self.write_known_hosts()
        self.link.create()

    # -- the overlay root file system -----------------------------------------------------

    def mount(self) -> None:
        """The root file system: an overlay of ``lowers`` (read-only) under ``upper``.
        ``redirect_dir``: a directory from a lower layer can be renamed, as on a disk."""
        work = self.run_dir / "work"
        for path in (self.upper, work, self.rootfs):
            path.mkdir(exist_ok=True)
        options = (
            f"lowerdir={':'.join(self.lowers)},upperdir={self.upper},workdir={work},redirect_dir=on"
        )
        run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.rootfs)])

    def unmount(self) -> None:
        if os.path.ismount(self.rootfs):
            run(["umount", str(self.rootfs)])

    def freeze(self) -> None:
        """Make what this (powered-off) host wrote a read-only layer under a new, empty
        writable one. A host with nothing written since it was last frozen keeps its layers."""
        if self.running():
            raise RuntimeError(f"{self.name} must be powered off to be frozen")
        if not any(self.upper.iterdir()):
            return
        self.unmount()
        self.layers_dir.mkdir(exist_ok=True)
        frozen = self.layers_dir / f"{self.name}-{secrets.token_hex(4)}"
        self.upper.rename(frozen)
        self.lowers = [str(frozen), *self.lowers]
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.run_dir / "work")], check=False)
        self.mount()

    def _set_identity(self) -> None:
        (self.rootfs / "etc/hostname").write_text(self.name + "\n")
        hosts = self.rootfs / "etc/hosts"
        lines = [
            line for line in hosts.read_text().splitlines() if not line.startswith("127.0.1.1")
        ]
        hosts.write_text("\n".join([lines[0], f"127.0.1.1 {self.name}", *lines[1:]]) + "\n")
        (self.rootfs / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")

    def _make_plain(self) -> None:
        chroot = ["chroot", str(self.rootfs)]
        run(["ssh-keygen", "-A", "-f", str(self.rootfs)])
        run(
            [
                *chroot,
                "useradd",
                "--create-home",
                "--shell",
                "/bin/bash",
                "--groups",
                "sudo",
                LOGIN_USER,
            ]
        )
        sudoers = self.rootfs / "etc/sudoers.d/90-cloud-init-users"
        sudoers.write_text(f"{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
        ssh_dir = self.rootfs / "home" / LOGIN_USER / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.key_file.with_suffix(".pub").read_text())
        run([*chroot, "chown", "-R", f"{LOGIN_USER}:{LOGIN_USER}", f"/home/{LOGIN_USER}/.ssh"])
        # Ready and idle at once: no cloud-init run, no apt run at a random moment.
        (self.rootfs / "etc/cloud/cloud-init.disabled").write_text("plain local host\n")
        for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
            (self.rootfs / "etc/systemd/system" / timer).symlink_to("/dev/null")
        self.write_known_hosts()

    def host_keys(self) -> list[str]:
        """The host's public host keys (``type base64`` each), read from its root file system."""
        keys = []
        for pub in sorted((self.rootfs / "etc/ssh").glob("ssh_host_*_key.pub")):
            parts = pub.read_text().split()
            if len(parts) >= 2:
                keys.append(f"{parts[0]} {parts[1]}")
        return keys

    def write_known_hosts(self) -> None:
        keys = [self.stack_host_key] if self.stack_host_key else self.host_keys()
        if not keys:
            raise RuntimeError(f"{self.name}: no SSH host keys in {self.rootfs}/etc/ssh")
        self.known_hosts.write_text("".join(f"{self.address} {key}\n" for key in keys))

    # -- power ----------------------------------------------------------------------------

    def boot(self, *, wait: bool = True, timeout: float = 120) -> None:
        """Start the host; with ``wait``, until SSH logs in and the boot has finished.

        A cloud-like host's host keys are generated by cloud-init at first boot: this
        returns (with ``wait=False``, before sshd answers) once they are known.
        """
        proc = spawn(
            [
                sys.executable,
                "-m",
                "tests.localcloud.supervise",
                str(self.rootfs),
                self.name,
                self.netns,
                *(self.limits.as_args() if self.limits else []),
            ],
            log=self.console_log,
            tied=self.tied,
            cwd=Path(__file__).resolve().parents[2],
        )
        self.supervisor_pid = proc.pid
        if not self.known_hosts.exists():
            self.wait_for_host_keys(timeout)
        if wait:
            self.wait_for_login(timeout)

    def wait_for_host_keys(self, timeout: float = 120) -> None:
        """Wait until cloud-init has written this instance's host keys; write known_hosts."""
        from tests.localcloud.cloudlike import host_keys_ready

        def ready():
            if not self.running():
                raise RuntimeError(f"{self.name} stopped; see {self.console_log}")
            return host_keys_ready(self.rootfs, self.instance_id)

        wait_for(
            ready, what=f"{self.name}'s host keys from cloud-init", timeout=timeout, interval=0.2
        )
        self.write_known_hosts()

    def wait_for_login(self, timeout: float = 120) -> str:
        """Wait until SSH logs in and systemd has finished booting; return the boot ID."""

        def login():
            result = self.ssh(
                "systemctl is-system-running --wait; cat /proc/sys/kernel/random/boot_id",
                check=False,
                timeout=60,
            )
            lines = result.stdout.split()
            if result.returncode in (0, 1) and len(lines) == 2:
                return lines[1]
            return None

        return wait_for(login, what=f"SSH login to {self.address}", timeout=timeout, interval=0.3)

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()

    def reboot(self, timeout: float = 120) -> str:
        """Reboot from inside (``systemctl reboot``) and wait until it is back; new boot ID."""
        before = self.boot_id()
        self.ssh("sudo systemctl reboot", check=False, timeout=15)

        def rebooted():
            result = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=10)
            boot = result.stdout.strip()
            return boot if result.returncode == 0 and boot and boot != before else None

        wait_for(rebooted, what=f"{self.name} back after reboot", timeout=timeout, interval=0.5)
        return self.wait_for_login(timeout)

    def shutdown(self) -> None:
        """Power off cleanly (the root file system stays, ``boot()`` starts it again)."""
        if self.supervisor_pid:
            stop(self.supervisor_pid, timeout=30)
            self.supervisor_pid = 0

    def ssh_argv(self) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.key_file),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            "-F",
            "/dev/null",
            f"{self.user}@{self.address}",
        ]

    def ssh(
        self, command: str, *, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*self.ssh_argv(), command],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{self.address}: `{command}` exited {result.returncode}: {result.stderr.strip()[-2000:]}"
            )
        return result

    def running(self) -> bool:
        return bool(self.supervisor_pid) and alive(self.supervisor_pid)

    # -- teardown -------------------------------------------------------------------------

    def destroy(self) -> None:
        """Power off, then remove the network namespace, NAT rule, cgroups and root filesystem."""
        self.shutdown()
        self.link.delete()
        HostCgroups(self.name).remove(timeout=2)
        if os.path.ismount(self.rootfs):
            subprocess.run(["umount", str(self.rootfs)], check=False)
        for path in (self.rootfs, self.upper, self.run_dir / "work"):
            if path.exists() and not os.path.ismount(path):
                # Never follow anything out of the host: rm stays on this file system.
                subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _host_nameservers() -> str:
    lines = [
        line
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith(("nameserver", "search", "options"))
    ]
    if not any(line.startswith("nameserver") for line in lines) or any(
        line.split()[1].startswith("127.") for line in lines if line.startswith("nameserver")
    ):
        raise RuntimeError("the machine's /etc/resolv.conf has no nameserver a guest can reach")
    return "\n".join(lines) + "\n"
