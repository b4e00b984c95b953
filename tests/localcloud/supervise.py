"""Keeps one local host running: boots it with systemd-nspawn and boots it again on reboot.

``python -m tests.localcloud.supervise ROOTFS MACHINE NETNS [--memory-mb N --cpus N]``.
nspawn exits with status 133 when the guest runs ``systemctl reboot``; any other
exit, or SIGTERM/SIGINT to this process (which powers the guest off cleanly), ends
it. The host runs in cgroups of its own (``limits.HostCgroups``), with the given
memory and CPU limits if any; they are removed when this process ends.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from tests.localcloud.limits import HostCgroups, Limits
from tests.localcloud.procs import die_with_parent

REBOOT_STATUS = 133


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localcloud.supervise")
    parser.add_argument("rootfs")
    parser.add_argument("machine")
    parser.add_argument("netns")
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--cpus", type=float)
    args = parser.parse_args(argv)
    limits = Limits(args.memory_mb, args.cpus) if args.memory_mb and args.cpus else None
    cgroups = HostCgroups(args.machine, limits)
    child: subprocess.Popen | None = None
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # nspawn: power the container off

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cgroups.create()
    die = die_with_parent(signal.SIGTERM)

    def in_own_cgroups() -> None:
        die()
        cgroups.attach(0)  # 0: the calling process, i.e. nspawn-to-be

    boots = 0
    try:
        while not stopping:
            boots += 1
            started = time.monotonic()
            print(f"supervise: boot {boots} of {args.machine} (limits: {limits})", flush=True)
            child = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    f"--directory={args.rootfs}",
                    f"--machine={args.machine}",
                    "--register=no",
                    "--keep-unit",
                    f"--network-namespace-path=/run/netns/{args.netns}",
                    "--resolv-conf=off",
                    "--link-journal=no",
                    "--console=read-only",
                ],
                stdin=subprocess.DEVNULL,
                preexec_fn=in_own_cgroups,
            )
            cgroups.mirror_into_payload()
            status = child.wait()
            print(
                f"supervise: nspawn exited {status} after {time.monotonic() - started:.1f}s",
                flush=True,
            )
            if status != REBOOT_STATUS:
                return 0 if stopping else status
        return 0
    finally:
        cgroups.remove()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
