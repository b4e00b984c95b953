"""The service user, its directories, the Flask key and the rendered configuration files."""

from __future__ import annotations

from provisioning import facts, files, handlers
from provisioning.layout import FILES, GROUP, PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import render
from provisioning.settings import Deployment
from provisioning.transport import Host

#: (path, owner, group, mode) of every directory the kit owns.
DIRECTORIES = (
    (PATHS["config_dir"], "root", GROUP, "750"),
    (PATHS["tls_dir"], "root", GROUP, "750"),
    (PATHS["state_dir"], USER, GROUP, "750"),
    (PATHS["mlflow_root"], "root", "root", "755"),
    (PATHS["envs_dir"], "root", "root", "755"),
    (PATHS["bin_dir"], "root", "root", "755"),
)


def service_user(host: Host, d: Deployment) -> Outcome[None]:
    """The ``mlflow`` system user (no login shell), the kit's directories and the servers'
    temporary directory (``server_tmp_dir``: mlflow's only, each instance empties its own)."""
    created = False
    if not host.read(facts.user_exists(USER)):
        host.run(
            f"useradd --system --user-group --home-dir {PATHS['state_dir']} "
            f"--shell /usr/sbin/nologin {USER}"
        )
        created = True
    wanted = (*DIRECTORIES, (d.server_tmp_dir, USER, GROUP, "700"))
    fixed = [
        path
        for path, owner, group, mode in wanted
        if files.ensure_directory(host, path, mode=mode, owner=owner, group=group)
    ]
    if not created and not fixed:
        return unchanged(f"user {USER} and {len(wanted)} directories as wanted")
    return changed(("created user " + USER + "; " if created else "") + ", ".join(fixed))


def install_files(host: Host, ctx: dict, names: tuple[str, ...]) -> frozenset[str]:
    """Render and install the templates ``names``; return the ones that changed."""
    installed = set()
    for name in names:
        file = FILES[name]
        mode = f"{file.mode:o}"
        content = render(name, ctx)
        if files.ensure_file(
            host, file.path, content, mode=mode, owner=file.owner, group=file.group
        ):
            installed.add(name)
    return frozenset(installed)


def install(host: Host, ctx: dict, names: tuple[str, ...]) -> Outcome[frozenset[str]]:
    """Render and install the templates ``names``; the value is the set that changed.

    A changed unit file is loaded (daemon-reload) here, before anything starts it.
    """
    installed = install_files(host, ctx, names)
    if not installed:
        return unchanged(f"{len(names)} files as rendered", installed)
    if handlers.actions_for(installed).daemon_reload:
        host.run("systemctl daemon-reload")
    return changed(", ".join(n for n in names if n in installed), installed)
