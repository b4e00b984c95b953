"""Miniforge and the server's conda environments: built once each, switched atomically."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from provisioning import facts, files
from provisioning.layout import ACTIVE_ENVIRONMENT, PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import env_dir
from provisioning.settings import Deployment
from provisioning.transport import Host

COMPLETE_MARKER = ".kit-complete"


@dataclass(frozen=True)
class Environment:
    """One built environment: ``/opt/mlflow/envs/<name>``."""

    prefix: str

    @property
    def name(self) -> str:
        return self.prefix.rsplit("/", 1)[-1]


def miniforge(host: Host, deployment: Deployment) -> Outcome[None]:
    """Install Miniforge once, from the pinned URL, verified by the pinned sha256."""
    if host.read(facts.executable(PATHS["conda_bin"])):
        return unchanged("already installed")
    root = PATHS["conda_root"]
    host.run(f"rm -rf {root}")  # a half-finished earlier install
    tmp = host.run("mktemp -d").stdout.strip()
    installer = f"{tmp}/miniforge.sh"
    try:
        host.run(
            f"curl -fsSL --retry 3 -o {installer} {shlex.quote(deployment.miniforge_url)}",
            timeout=900,
        )
        host.run(f"echo '{deployment.miniforge_sha256}  {installer}' | sha256sum -c --quiet -")
        host.run(f"bash {installer} -b -p {root}", timeout=1800)
    finally:
        host.run(f"rm -rf {tmp}", check=False)
    return changed("installed, sha256 verified")


def conda_env_commands(prefix: str) -> list[str]:
    """The exact conda commands that build the server's environment at ``prefix``."""
    conda = PATHS["conda_bin"]
    return [
        f"{conda} env create --quiet --prefix {prefix} --file {PATHS['environment_yml']}",
        f"touch {prefix}/{COMPLETE_MARKER}",
    ]


def environment(host: Host, environment_yml: str, deployment: Deployment) -> Outcome[Environment]:
    """The environment for this environment.yml, built once; ``next`` points at it."""
    env = Environment(env_dir(environment_yml))
    any_changed = files.ensure_file(host, PATHS["environment_yml"], environment_yml, mode="0644")
    built = False
    if not host.read(facts.exists(f"{env.prefix}/{COMPLETE_MARKER}")):
        host.run(f"rm -rf {env.prefix}")  # an interrupted earlier build
        prefix = ""
        if deployment.extra_ca_certs:
            bundle = PATHS["system_ca_bundle"]
            prefix = (
                f"env SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle} PIP_CERT={bundle} "
                f"CONDA_SSL_VERIFY={bundle} "
            )
        for command in conda_env_commands(env.prefix):
            host.run(prefix + command, timeout=3600)
        built = True
    any_changed |= built
    any_changed |= files.ensure_symlink(host, PATHS["next_env"], env.prefix)
    if any_changed:
        return changed(f"env {env.name}" + (" built" if built else ""), env)
    return unchanged(f"env {env.name}", env)


def activate(host: Host, env: Environment) -> Outcome[frozenset[str]]:
    """Point ``current`` (what the servers run) at ``env``."""
    if files.ensure_symlink(host, PATHS["current_env"], env.prefix):
        return changed(f"env {env.name}", frozenset({ACTIVE_ENVIRONMENT}))
    return unchanged(f"env {env.name} already active", frozenset())
