"""Fabric tasks that change the server's secrets: the KEK and the admin password."""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml
from fabric import task
from invoke.exceptions import Exit

from provisioning import plays, pulumi_cli
from provisioning.session import load_deployment, on_host, say
from provisioning.settings import Secret
from provisioning.settings.rules import MIN_ADMIN_PASSWORD


@task(help={"stack": "Pulumi stack of the host", "settings": "YAML settings file of the host"})
def rotate_kek(c, stack=None, settings=None):
    """Replace the KEK that encrypts MLflow's AI Gateway secrets (provider API keys).

    The servers stop while MLflow's own rotation (`mlflow crypto rotate-kek`)
    re-wraps every secret's key under the new KEK (MLflow requires them stopped;
    about half a minute), then a bootstrap gives them the new KEK and proves them.
    The new passphrase is generated on the host and never leaves it. Hosts whose
    KEK comes from the kek_passphrase setting rotate by a new setting instead.

    Example:
      fab rotate-kek --stack dev
    """
    deployment = load_deployment(c, stack, settings)
    if deployment.kek_passphrase is not None:
        raise Exit("rotate-kek: the KEK comes from the kek_passphrase setting here", code=2)
    with on_host(deployment, "rotate-kek") as play:
        plays.rotate_kek(play, deployment)
    say(f"[{deployment.host}] KEK rotated: {play.changes} changed")


@task(
    help={
        "stack": "Pulumi stack of the host",
        "settings": "YAML settings file of the host",
        "new-password-file": "file with the new password (12+ characters); created with a "
        "generated one (0600) when it does not exist",
        "current-password-file": "file with the server's current admin password, when the "
        "settings' one is stale (changed in the UI); default: the settings' or stack's",
    }
)
def rotate_admin_password(
    c, new_password_file, stack=None, settings=None, current_password_file=None
):
    """Change the MLflow admin's password on the server, then everywhere the kit keeps it.

    MLflow's own API changes it (the server checks the current one); a bootstrap then
    gives the servers the new one, one instance at a time. Where the settings file
    reads admin_password from a file ({file: PATH}), that file gets the new password;
    for a stack it goes into the stack's adminPassword secret (then run `pulumi up`).
    No password is printed or put on a command line.

    Examples:
      fab rotate-admin-password --settings onprem.yaml --new-password-file secrets/admin_password.new
      fab rotate-admin-password --stack dev --new-password-file ~/.mlflow-dev-admin
    """
    deployment = load_deployment(c, stack, settings)
    if deployment.auth != "basic":
        raise Exit(
            "rotate-admin-password: with auth oidc the kit's admin is a service account whose "
            "token bootstrap renews; people administer through oidc_admin_groups",
            code=2,
        )
    new = _password_file(Path(new_password_file).expanduser(), create=True)
    current = deployment.admin_password
    if current_password_file:
        current = _password_file(Path(current_password_file).expanduser(), create=False)
    if new == current:
        raise Exit("rotate-admin-password: the new password is the current one", code=2)
    with on_host(deployment, "rotate-admin-password") as play:
        plays.rotate_admin_password(play, deployment, current, new)
    say(
        f"[{deployment.host}] admin password changed on the server; {_keep_new(stack, settings, new)}"
    )


def _password_file(path: Path, *, create: bool) -> Secret:
    if not path.exists():
        if not create:
            raise Exit(f"rotate-admin-password: {path} does not exist", code=2)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    value = path.read_text().removesuffix("\n")
    if len(value) < MIN_ADMIN_PASSWORD:
        raise Exit(
            f"rotate-admin-password: {path} holds fewer than {MIN_ADMIN_PASSWORD} characters",
            code=2,
        )
    return Secret(value)


def _keep_new(stack: str | None, settings: str | None, new: Secret) -> str:
    """Store the new password where the deployment reads it; say where (never what)."""
    if stack:
        pulumi_cli.config_set_secret(stack, "mlflow-server:adminPassword", new.reveal())
        return f"stack {stack}'s adminPassword secret set: run `pulumi up -s {stack}`"
    path = Path(settings)
    given = (yaml.safe_load(path.read_text()) or {}).get("admin_password")
    if isinstance(given, dict) and given.keys() == {"file"}:
        target = (path.parent / Path(given["file"]).expanduser()).resolve()
        target.write_text(new.reveal() + "\n")
        target.chmod(0o600)
        return f"written to {target}, where {path} reads it"
    return f"now put it in {path}'s admin_password (the settings still hold the old one)"
