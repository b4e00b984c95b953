"""System packages and the trust store."""

from __future__ import annotations

import shlex
from pathlib import Path

from provisioning import facts, files
from provisioning.layout import PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.transport import Host

SYSTEM_PACKAGES = ("nginx", "openssl", "curl", "ca-certificates", "bzip2")
#: Keeps apt from starting a service it installs (nginx with Debian's default site on :80).
POLICY_RC_D = "/usr/sbin/policy-rc.d"


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


def system_packages(host: Host) -> Outcome[None]:
    installed = host.read(facts.installed_packages(SYSTEM_PACKAGES))
    missing = [p for p in SYSTEM_PACKAGES if p not in installed]
    if not missing:
        return unchanged("all installed")
    host.run(f"printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 755 {POLICY_RC_D}")
    try:
        host.run("DEBIAN_FRONTEND=noninteractive apt-get update -q", timeout=900)
        host.run(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
            + " ".join(missing),
            timeout=1800,
        )
    finally:
        host.run(f"rm -f {POLICY_RC_D}", check=False)
    return changed("installed " + " ".join(missing))
