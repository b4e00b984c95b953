"""First boot, system packages and the trust store.

On a cloud VM's first boot cloud-init and unattended-upgrades run apt while
the operator is already connected: the first-boot step waits for them (bounded,
naming who holds apt's locks), and every apt command also waits for the lock
itself, as another apt run may start at any moment.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from provisioning import facts, files, jobs, waiting
from provisioning.layout import PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.transport import Host, RemoteError

SYSTEM_PACKAGES = ("nginx", "openssl", "curl", "ca-certificates", "bzip2")
#: Keeps apt from starting a service it installs (nginx with Debian's default site on :80).
POLICY_RC_D = "/usr/sbin/policy-rc.d"
#: The first line of the kit's own policy-rc.d, so a stale one is recognised and removed.
POLICY_RC_D_MARK = "# mlflow-kit: held back while apt runs"
FIRST_BOOT_TIMEOUT_S = 900
LOCK_TIMEOUT_S = 600
POLL_S = 2
UPDATE_TRIES = 6
APT = f"DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout={LOCK_TIMEOUT_S}"


def first_boot(host: Host) -> Outcome[None]:
    """Wait until cloud-init has finished and nobody holds apt's locks; remove a stale policy-rc.d."""
    waited = []
    if host.read(facts.CLOUD_INIT_STATUS) in ("running", "not started", "not run"):
        host.note("waiting for cloud-init to finish")
        host.run(f"timeout {FIRST_BOOT_TIMEOUT_S} cloud-init status --wait >/dev/null", check=False)
        status = host.read(facts.CLOUD_INIT_STATUS)
        if status in ("running", "not started", "not run"):
            raise host.error(
                "cloud-init status --wait",
                -1,
                f"cloud-init still {status} after {FIRST_BOOT_TIMEOUT_S}s: see "
                "/var/log/cloud-init-output.log on the host",
            )
        waited.append(f"cloud-init ({status})")
    holders = _wait_for_apt_locks(host)
    if holders:
        waited.append(f"apt's locks held by {holders}")
    removed = _remove_stale_policy_rc_d(host)
    if removed:
        return changed(
            "removed a stale kit policy-rc.d"
            + ("; waited for " if waited else "")
            + ", ".join(waited)
        )
    return unchanged("waited for " + ", ".join(waited) if waited else "nothing running apt")


def _wait_for_apt_locks(host: Host) -> str:
    """Until no process has apt's or dpkg's lock files open; who held them ("" if nobody)."""

    def held_by(holders: list[tuple[int, str]]) -> str:
        return ", ".join(f"{name} (pid {pid})" for pid, name in holders)

    def late(holders: list[tuple[int, str]]) -> RemoteError:
        return host.error(
            "wait for apt's locks",
            -1,
            f"apt's locks ({', '.join(facts.APT_LOCKS)}) still held by {held_by(holders)} after "
            f"{FIRST_BOOT_TIMEOUT_S}s: let it finish (or stop it), then run the task again",
        )

    first = host.read(facts.APT_LOCK_HOLDERS)
    if not first:
        return ""
    waiting.until(
        host,
        lambda: host.read(facts.APT_LOCK_HOLDERS),
        lambda holders: not holders,
        timeout=FIRST_BOOT_TIMEOUT_S,
        poll=POLL_S,
        late=late,
        note=lambda holders, seconds: (
            f"waiting for apt's locks, held by {held_by(holders)} ({seconds:.0f}s)"
        ),
    )
    return held_by(first)


def _remove_stale_policy_rc_d(host: Host) -> bool:
    if host.read(facts.file_text(POLICY_RC_D)).splitlines()[1:2] != [POLICY_RC_D_MARK]:
        return False
    if host.read(facts.unit_active(jobs.unit_name("apt"))) in jobs.RUNNING_STATES:
        return False
    host.run(f"rm -f {POLICY_RC_D}")
    return True


def apt_install_script(packages: list[str]) -> str:
    """Install ``packages`` with service starts held back; the hold goes whatever happens."""
    return (
        f"set -e; if [ ! -e {POLICY_RC_D} ]; then "
        f"trap 'rm -f {POLICY_RC_D}' EXIT; trap 'exit 143' TERM INT; "
        f"printf '#!/bin/sh\\n{POLICY_RC_D_MARK}\\nexit 101\\n' > {POLICY_RC_D}; chmod 755 {POLICY_RC_D}; fi; "
        # apt-get update does not wait for the lists lock (DPkg::Lock::Timeout is dpkg's):
        # a few tries, should an apt timer start right after the first-boot wait.
        f"i=0; until {APT} update; do i=$((i+1)); [ $i -lt {UPDATE_TRIES} ] || exit 1; sleep 10; done; "
        f"{APT} install -y --no-install-recommends {' '.join(packages)}"
    )


def system_packages(host: Host) -> Outcome[None]:
    installed = host.read(facts.installed_packages(SYSTEM_PACKAGES))
    missing = [p for p in SYSTEM_PACKAGES if p not in installed]
    if not missing:
        return unchanged("all installed")
    jobs.run_job(
        host,
        "apt",
        apt_install_script(missing),
        timeout=2700,
        description="apt-get install for MLflow",
    )
    installed = host.read(facts.installed_packages(SYSTEM_PACKAGES))
    still = [p for p in SYSTEM_PACKAGES if p not in installed]
    if still:
        raise host.error(
            "apt-get install", 1, "not installed after apt finished: " + " ".join(still)
        )
    return changed("installed " + " ".join(missing))


def trust_ca_certs(host: Host, paths: tuple[str, ...]) -> Outcome[None]:
    """Install the given PEM CA certificates into the VM's trust store (apt, pip, the server)."""
    kit_dir = PATHS["kit_ca_dir"]
    wanted, any_changed = set(), False
    for path in paths:
        name = Path(path).name.removesuffix(".crt").removesuffix(".pem") + ".crt"
        wanted.add(name)
        any_changed |= files.ensure_file(
            host, f"{kit_dir}/{name}", Path(path).read_bytes(), mode="0644"
        )
    removed = sorted(set(host.read(facts.directory_listing(kit_dir))) - wanted)
    for name in removed:
        host.run(f"rm -f {kit_dir}/{shlex.quote(name)}")
    if paths:
        # pip uses its own bundle unless told to use the system one.
        any_changed |= files.ensure_file(
            host, PATHS["pip_conf"], f"[global]\ncert = {PATHS['system_ca_bundle']}\n", mode="0644"
        )
    detail = (
        f"{len(paths)} extra CA certificate(s) trusted" if paths else "no extra CA certificates"
    )
    if not any_changed and not removed:
        return unchanged(detail)
    host.run("update-ca-certificates")
    return changed(detail + (f"; removed {', '.join(removed)}" if removed else ""))
