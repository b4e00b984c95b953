"""Miniforge and the server's conda environments: built once each, switched atomically."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from provisioning import artifact_streaming, facts, files, jobs, offline
from provisioning.layout import PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import env_dir, packages_context, pip_section, server_lock, wheelhouse_path
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


#: The file in an environment that records its MLflow's two Alembic histories (RECORD_SCRIPT,
#: once per environment), so bootstrap's schema check (provisioning.steps.schema) reads no
#: migration script and imports no MLflow.
HISTORIES_FILE = "kit-schema-histories.json"

#: MLflow's version and, per Alembic history (tracking, auth), its head and how many
#: migrations each revision is from it. The scripts are read where MLflow's own
#: ``_get_alembic_config`` (tracking, ``mlflow.store.db.utils``; auth,
#: ``mlflow.server.auth.db.utils``) points Alembic, without importing the server (Flask,
#: FastAPI); reading them imports MLflow (2.5 to 4 s here).
HISTORIES_FUNCTION = """
def histories():
    import importlib.util, os
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    package = os.path.dirname(importlib.util.find_spec("mlflow").origin)
    found = {}
    for name, directory in (("tracking", "store/db_migrations"), ("auth", "server/auth/db/migrations")):
        directory = os.path.join(package, *directory.split("/"))
        alembic = Config(os.path.join(directory, "alembic.ini"))
        alembic.set_main_option("script_location", directory)
        script = ScriptDirectory.from_config(alembic)
        head = script.get_current_head()
        pending = {}
        for revision in script.walk_revisions():
            steps = script.iterate_revisions(head, revision.revision)
            pending[revision.revision] = len([r for r in steps if r.revision != revision.revision])
        found[name] = {"head": head, "pending": pending}
    import mlflow  # the migration scripts imported it already
    found["mlflow"] = mlflow.__version__
    return found
"""

#: Run with the environment's Python: writes HISTORIES_FILE (its path is the argument)
#: whole or not at all.
RECORD_SCRIPT = (
    'import json, os, sys, warnings\nwarnings.filterwarnings("ignore")\n'
    + HISTORIES_FUNCTION
    + 'with open(sys.argv[1] + ".kit-new", "w") as handle:\n'
    + "    json.dump(histories(), handle)\n"
    + 'os.replace(sys.argv[1] + ".kit-new", sys.argv[1])\n'
)


def histories_path(prefix: str) -> str:
    return f"{prefix}/{HISTORIES_FILE}"


def miniforge_script(deployment: Deployment) -> str:
    """Download the pinned installer, refuse it unless its sha256 matches, install."""
    root = PATHS["conda_root"]
    return (
        f"set -e; rm -rf {root}; tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"' EXIT; "
        f'curl -fsSL --retry 3 -o "$tmp/miniforge.sh" {shlex.quote(deployment.miniforge_url)}; '
        f'echo "{deployment.miniforge_sha256}  $tmp/miniforge.sh" | sha256sum -c --quiet -; '
        f'bash "$tmp/miniforge.sh" -b -p {root}'
    )


def offline_miniforge_script(deployment: Deployment) -> str:
    """Install from the installer this machine uploaded (offline_install), checked again."""
    root, installer = PATHS["conda_root"], PATHS["miniforge_upload"]
    return (
        f"set -e; rm -rf {root}; "
        f'echo "{deployment.miniforge_sha256}  {installer}" | sha256sum -c --quiet -; '
        f"bash {installer} -b -p {root}; rm -f {installer}"
    )


def miniforge(host: Host, deployment: Deployment) -> Outcome[None]:
    """Install Miniforge once, from the pinned URL, verified by the pinned sha256; with
    offline_install, fetched by this machine and uploaded (the host has no internet)."""
    if host.read(facts.executable(PATHS["conda_bin"])):
        return unchanged("already installed")
    script = miniforge_script(deployment)
    if deployment.offline_install:
        cache = offline.cache_dir(deployment.offline_cache_dir)
        local = offline.installer(deployment.miniforge_url, deployment.miniforge_sha256, cache)
        host.note(f"uploading {local} ({local.stat().st_size / 1e6:.1f} MB)")
        files.ensure_file(host, PATHS["miniforge_upload"], local.read_bytes(), mode="0600")
        script = offline_miniforge_script(deployment)
    how = jobs.run_job(
        host,
        "miniforge",
        script,
        timeout=2700,
        description="Miniforge install",
    )
    if not host.read(facts.executable(PATHS["conda_bin"])):
        raise host.error("Miniforge install", 1, f"{PATHS['conda_bin']} missing after the install")
    return changed(f"installed, sha256 verified ({how})")


def kit_wheel(host: Host) -> Outcome[None]:
    """Upload the kit's wheel that environment.yml names, before an environment is built
    from it (provisioning.artifact_streaming). Older ones stay: an environment built from
    them is rebuilt from its own environment.yml only if it is removed, and then needs them.
    """
    wheel = artifact_streaming.wheel()
    path = f"{PATHS['kit_wheels_dir']}/{wheel.filename}"
    if files.ensure_file(host, path, wheel.data, mode="0644"):
        return changed(f"uploaded {wheel.filename}")
    return unchanged(wheel.filename)


def package_lock(host: Host, deployment: Deployment) -> Outcome[None]:
    """Upload the pip lock environment.yml names (provisioning.lock), before the build.
    Its name carries its sha256; older ones stay, as the kit's wheels do."""
    found = server_lock(deployment)
    if found is None:
        return unchanged("install_from_lock false: pip resolves at install time")
    path = f"{PATHS['locks_dir']}/{found.host_name}"
    if files.ensure_file(host, path, found.text, mode="0644"):
        return changed(f"uploaded {found.name} (sha256 {found.sha256[:12]})")
    return unchanged(f"{found.name} (sha256 {found.sha256[:12]})")


def wheelhouse(host: Host, deployment: Deployment) -> Outcome[None]:
    """offline_install: the lock's wheels for the host's Python (the installer's), fetched
    by this machine once (provisioning.offline) and uploaded where the host lacks them."""
    found = server_lock(deployment)
    if not deployment.offline_install or found is None:
        return unchanged("online: pip reads the package index")
    python = PATHS["conda_python"]
    target = host.read(offline.target(python))
    if target is None:
        raise host.error(python, 1, f"{python} missing: Miniforge's base has no Python")
    wanted = ".".join(deployment.python_version.split(".")[:2])
    if target.python_version != wanted:
        raise host.error(
            python, 1,
            f"python_version {deployment.python_version}, but the installer's Python is "
            f"{target.markers['python_full_version']}: offline_install builds a venv of it, "
            f"so set python_version: {target.python_version} (or another miniforge_url)",
        )  # fmt: skip
    cache = offline.cache_dir(deployment.offline_cache_dir)
    local = offline.wheelhouse(found, target, cache, host.note)
    remote = wheelhouse_path(found)
    present = host.read(facts.sha256sums(remote))
    missing = [name for name, digest in local.wheels.items() if present.get(name) != digest]
    if not missing:
        return unchanged(f"{len(local.wheels)} wheels for {target.key}")
    size = sum((local.path / name).stat().st_size for name in missing)
    host.note(f"uploading {len(missing)} of {len(local.wheels)} wheels ({size / 1e6:.0f} MB)")
    tmpdir = host.run("mktemp -d", sudo=False).stdout.strip()
    try:
        for name in missing:
            host.put((local.path / name).read_bytes(), f"{tmpdir}/{name}")
        # Each under a name pip does not read until it is whole, then renamed.
        host.run(
            f"install -d -m 0755 {remote} && for f in {shlex.quote(tmpdir)}/*; do "
            f'b=$(basename "$f"); install -m 0644 -o root -g root "$f" {remote}/."$b".kit-new '
            f'&& mv -f {remote}/."$b".kit-new {remote}/"$b"; done'
        )
    finally:
        host.run(f"rm -rf {shlex.quote(tmpdir)}", sudo=False, check=False)
    return changed(
        f"uploaded {len(missing)} of {len(local.wheels)} wheels for {target.key} "
        f"({size / 1e6:.0f} MB)"
    )


def build_script(prefix: str, offline_install: bool = False) -> str:
    """The exact commands that build the server's environment at ``prefix``, marked when
    complete: conda from environment.yml, or with offline_install a venv of the installer's
    Python and pip from environment.yml's pip section (written out as conda would).

    pip installs without byte-compiling, one wheel's files at a time on one core; one
    ``compileall`` over site-packages on every core then writes the same ``.pyc`` files
    (the servers' user cannot write them later). A 3.17.2 lock on a 2-core machine:
    47.6 s -> 14.0 s + 14.0 s. Files that do not compile are left as pip leaves them.
    """
    conda = PATHS["conda_bin"]
    if offline_install:
        build = (
            f"{PATHS['conda_python']} -m venv {prefix}; "
            f"{prefix}/bin/python -m pip install --quiet --disable-pip-version-check "
            f"--no-compile -r {PATHS['environment_requirements']}"
        )
    else:
        # conda runs the pip section's install itself, in this environment (its
        # any_subprocess, conda/gateways/subprocess.py, passes it on): PIP_COMPILE=0
        # is pip's --no-compile (PIP_NO_COMPILE=1 would be --compile: pip reads a boolean
        # setting as the value of the option it names).
        build = (
            f"PIP_COMPILE=0 {conda} env create --quiet --prefix {prefix} "
            f"--file {PATHS['environment_yml']}"
        )
    compile_ = (
        f"{prefix}/bin/python -m compileall -q -j 0 {prefix}/lib/python3*/site-packages "
        "|| echo compileall: some files did not compile, left without .pyc as pip leaves them"
    )
    return f"set -e; rm -rf {prefix}; {build}; {compile_}; touch {prefix}/{COMPLETE_MARKER}"


def environment(host: Host, environment_yml: str, deployment: Deployment) -> Outcome[Environment]:
    """The environment for this environment.yml, built once; ``next`` points at it.

    The build runs as its own unit (provisioning.jobs): an operator's dropped
    connection neither kills it nor, on the next run, starts a second one.
    """
    env = Environment(env_dir(environment_yml))
    any_changed = files.ensure_file(host, PATHS["environment_yml"], environment_yml, mode="0644")
    if deployment.offline_install:
        section = "\n".join(pip_section(packages_context(deployment))) + "\n"
        any_changed |= files.ensure_file(
            host, PATHS["environment_requirements"], section, mode="0644"
        )
    built = ""
    complete = f"{env.prefix}/{COMPLETE_MARKER}"
    if not host.read(facts.exists(complete)):
        ca = {}
        if deployment.extra_ca_certs:
            bundle = PATHS["system_ca_bundle"]
            ca = {
                k: bundle
                for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CONDA_SSL_VERIFY")
            }
        built = jobs.run_job(
            host,
            f"conda-{env.name}",
            build_script(env.prefix, deployment.offline_install),
            timeout=3600,
            description=f"MLflow environment {env.name}",
            env=ca,
        )
        if not host.read(facts.exists(complete)):
            raise host.error("conda env create", 1, f"{env.prefix} incomplete after its build")
    recorded = record_histories(host, env)
    any_changed |= bool(built) or recorded
    any_changed |= files.ensure_symlink(host, PATHS["next_env"], env.prefix)
    if any_changed:
        done = f" built ({built})" if built else " (schema histories recorded)" if recorded else ""
        return changed(f"env {env.name}{done}", env)
    return unchanged(f"env {env.name}", env)


def record_histories(host: Host, env: Environment) -> bool:
    """Record the environment's MLflow schema histories (HISTORIES_FILE) once: after its
    build, or on the first bootstrap of an environment built before the record. True when
    written now."""
    path = histories_path(env.prefix)
    if host.read(facts.exists(path)):
        return False
    command = f"{env.prefix}/bin/python -c {shlex.quote(RECORD_SCRIPT)} {path}"
    result = host.run(command, check=False, timeout=300)
    if result.exited != 0:
        raise host.error(
            "record of MLflow's schema histories", result.exited, result.stderr or result.stdout
        )
    return True


def activate(host: Host, env: Environment) -> Outcome[Environment | None]:
    """Point ``current`` (what the servers run) at ``env``; the value is the environment it
    pointed at before (None when unchanged), for a roll back."""
    before = host.read(facts.symlink_target(PATHS["current_env"]))
    history = host.read(facts.file_text(PATHS["env_history"])).split()
    if history[-1:] != [env.name]:
        # Most recent last: which environments a roll back or the pruning keeps.
        files.ensure_file(
            host, PATHS["env_history"], "\n".join([*history, env.name]) + "\n", mode="0644"
        )
    if before == env.prefix:
        return unchanged(f"env {env.name} already active", None)
    files.ensure_symlink(host, PATHS["current_env"], env.prefix)
    previous = Environment(before) if before else None
    return changed(f"env {env.name}" + (f" (was {previous.name})" if previous else ""), previous)


def prune(host: Host, keep: int) -> Outcome[None]:
    """Remove environments beyond the ``keep`` most recently activated (the current one and
    those a roll back may want), and conda's package cache."""
    history = host.read(facts.file_text(PATHS["env_history"])).split()
    present = host.read(facts.directory_listing(PATHS["envs_dir"]))
    kept = set(history[-keep:]) | {
        host.read(facts.symlink_target(PATHS[link])).rsplit("/", 1)[-1]
        for link in ("current_env", "next_env")
    }
    gone = sorted(name for name in present if name not in kept)
    if not gone:
        return unchanged(f"{len(present)} environment(s), at most {keep} kept")
    for name in gone:
        host.run(f"rm -rf {PATHS['envs_dir']}/{shlex.quote(name)}")
    remaining = [name for name in history if name not in gone]
    files.ensure_file(host, PATHS["env_history"], "\n".join(remaining) + "\n", mode="0644")
    host.run(f"{PATHS['conda_bin']} clean --all --yes --quiet >/dev/null", check=False)
    return changed(f"removed {len(gone)} old environment(s): {', '.join(gone)}")
