"""Keeps one local host running: boots it with systemd-nspawn and boots it again on reboot.

``python -m tests.localcloud.supervise ROOTFS MACHINE NETNS``. nspawn exits
with status 133 when the guest runs ``systemctl reboot``; any other exit, or
SIGTERM/SIGINT to this process (which powers the guest off cleanly), ends it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.localcloud.procs import die_with_parent

REBOOT_STATUS = 133


def main(rootfs: str, machine: str, netns: str) -> int:
    child: subprocess.Popen | None = None
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # nspawn: power the container off

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    boots = 0
    while not stopping:
        boots += 1
        started = time.monotonic()
        print(f"supervise: boot {boots} of {machine}", flush=True)
        child = subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                f"--directory={rootfs}",
                f"--machine={machine}",
                "--register=no",
                "--keep-unit",
                f"--network-namespace-path=/run/netns/{netns}",
                "--resolv-conf=off",
                "--link-journal=no",
                "--console=read-only",
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        status = child.wait()
        print(
            f"supervise: nspawn exited {status} after {time.monotonic() - started:.1f}s", flush=True
        )
        if status != REBOOT_STATUS:
            return 0 if stopping else status
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
