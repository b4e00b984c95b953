"""The Debian 12 image every fresh host starts from, built once with debootstrap.

The image is a root filesystem like Debian's own cloud images (debian-cloud-images:
the CLOUD class installs openssh-server, sudo, dbus and unattended-upgrades, the EC2
class cloud-init): systemd, sshd, python3, sudo, curl, CA certificates, cloud-init,
unattended-upgrades with apt's daily timers enabled. There is no login user, no host
key, no machine ID and no authorized key: each host gets its own, either from the
local cloud directly (the plain flavour, see ``host.py``) or from cloud-init at first
boot (the cloud-like flavour, see ``cloudlike.py``).

cloud-init looks only at the NoCloud seed (``/var/lib/cloud/seed/nocloud``) and
leaves the network alone: the guest's link is configured from outside.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from tests.localcloud.procs import run

SUITE = "bookworm"
LOGIN_USER = "admin"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "libnss-systemd",
    "openssh-server",
    "sudo",
    "python3",
    "python3-venv",
    "ca-certificates",
    "curl",
    "iproute2",
    "procps",
    "less",
    # As on Debian's cloud images: cloud-init reads the seed, unattended-upgrades and
    # apt's timers (shipped by apt) update the system in the background.
    "cloud-init",
    "unattended-upgrades",
    "python3-apt",
    # debootstrap does not resolve virtual packages: python3-cryptography (for
    # cloud-init's oauthlib) needs the one that provides the cffi backend API.
    "python3-cffi-backend",
)
#: Bump when the post-install configuration below changes.
RECIPE_VERSION = "3"
#: cloud-init, for every host built from this image. Debian's own images set the
#: datasource for their cloud; here the seed directory is the only source, and the
#: link is configured from outside, so cloud-init must not write network config.
#: Sources are kept: the image already points at this machine's Debian mirror. The
#: locale is the one debootstrap's image has (cloud-init's default, en_US.UTF-8, is
#: not generated in it, and its locale module would fail).
CLOUD_INIT_CONFIG = """\
# The local cloud: a NoCloud seed directory is the only datasource.
datasource_list: [NoCloud, None]
network:
  config: disabled
apt:
  preserve_sources_list: true
locale: C.UTF-8
"""
CACHE_ROOT = Path(os.environ.get("MLFLOW_KIT_CACHE", "/var/cache/mlflow-kit"))


def debian_mirror() -> str:
    """The Debian mirror this machine's own apt uses (so the guest uses the same)."""
    override = os.environ.get("MLFLOW_KIT_DEBIAN_MIRROR")
    if override:
        return override
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for block in sources.read_text().split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", block, re.M) and "security" not in block:
                match = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if match:
                    return match.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    raise RuntimeError(
        "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list;"
        " set MLFLOW_KIT_DEBIAN_MIRROR"
    )


def image_key() -> str:
    text = "\n".join([SUITE, RECIPE_VERSION, *PACKAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_dir() -> Path:
    return CACHE_ROOT / "images" / f"debian12-{image_key()}"


def ensure_image(log=print) -> tuple[Path, float]:
    """The cached image's root filesystem, built first if missing; and the build time (0 if cached)."""
    target = image_dir() / "rootfs"
    if (image_dir() / "complete").exists():
        return target, 0.0
    image_dir().parent.mkdir(parents=True, exist_ok=True)
    with open(image_dir().parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (image_dir() / "complete").exists():
            return target, 0.0
        started = time.monotonic()
        log(
            f"building the Debian 12 image with debootstrap into {image_dir()} (two or three minutes, once)"
        )
        shutil.rmtree(image_dir(), ignore_errors=True)
        building = image_dir().with_name(image_dir().name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        rootfs = building / "rootfs"
        rootfs.parent.mkdir(parents=True)
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(PACKAGES),
                SUITE,
                str(rootfs),
                debian_mirror(),
            ]
        )
        _configure(rootfs)
        building.rename(image_dir())
        (image_dir() / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        return target, time.monotonic() - started


def _configure(rootfs: Path) -> None:
    chroot = ["chroot", str(rootfs)]
    run([*chroot, "systemctl", "enable", "ssh.service"])
    (rootfs / "etc/cloud/cloud.cfg.d/99_localcloud.cfg").write_text(CLOUD_INIT_CONFIG)
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        if not (rootfs / "etc/systemd/system/timers.target.wants" / timer).exists():
            raise RuntimeError(f"the image's {timer} is not enabled, as Debian's images have it")
    # Each host gets its own machine ID, host keys and authorized keys.
    (rootfs / "etc/machine-id").write_text("")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    run([*chroot, "apt-get", "clean"])
