"""What each ``auth`` mode means for the servers: the MLflow app, its packages and settings.

``basic``: MLflow's basic-auth app (``--app-name basic-auth``), users in the tracking
database, an admin MLflow creates from MLFLOW_AUTH_ADMIN_PASSWORD.

``oidc``: the mlflow-oidc-auth plugin (``--app-name oidc-auth``): people sign in through
the organisation's OpenID Connect provider (authorization code with PKCE), members of
``oidc_allowed_groups`` only; scripts send a personal access token as the basic-auth
password, or the provider's token as ``MLFLOW_TRACKING_TOKEN``. The plugin keeps its
users, groups and grants in its own PostgreSQL schema of the tracking database
(:data:`OIDC_SCHEMA`): its tables are named like MLflow's basic-auth ones (``users``,
``experiment_permissions``), which stay where they are, so switching back loses nothing.
The kit administers it as a service account of its own (``admin_username``) whose
access token is generated on the VM and kept there (provisioning.steps.oidc).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from provisioning.settings import Deployment
from provisioning.settings.auth import default_permission

APP_NAMES = {"basic": "basic-auth", "oidc": "oidc-auth"}
#: basic_auth.ini's ``auth_cache_ttl_seconds``: how long an instance that hears no user
#: changes (kit_auth) accepts a credential it checked; ``fab status`` says so for one.
AUTH_CACHE_TTL_SECONDS = 60
#: The PostgreSQL schema of the plugin's tables.
OIDC_SCHEMA = "mlflow_oidc_auth"
#: Where MLflow's OpenID Connect callback is, on the tracking URL.
CALLBACK_PATH = "/callback"
#: pg_advisory_lock key of the kit's own migrations ("mlflowmg", as templates/mlflow-migrate.py).
MIGRATION_LOCK_KEY = 0x6D6C666C6F776D67


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def users_db_uri(server_uri: str) -> str:
    """The servers' backend URI with the plugin's schema first on the search path."""
    base, _, query = server_uri.partition("?")
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "options"]
    params.append(("options", f"-csearch_path={OIDC_SCHEMA}"))
    return f"{base}?{urlencode(params, safe='/')}"


def auth_context(deployment: Deployment, server_uri: str) -> dict[str, Any]:
    """The templates' auth variables for ``deployment`` (``server_uri``: the servers' backend URI)."""
    ctx: dict[str, Any] = {
        "auth": deployment.auth,
        "app_name": APP_NAMES[deployment.auth],
        # What the servers run: the auth app, or the kit's app around it (kit_downloads.py).
        "server_app_name": "kit-streaming" if deployment.stream_downloads else None,
        "default_permission": default_permission(deployment),
        "oidc": None,
    }
    if deployment.auth == "oidc":
        ctx["oidc"] = {
            "plugin_version": deployment.oidc_plugin_version,
            "discovery_url": discovery_url(deployment.oidc_issuer),
            "issuer": deployment.oidc_issuer,
            "client_id": deployment.oidc_client_id,
            "client_secret": deployment.oidc_client_secret.reveal(),
            "redirect_uri": deployment.tracking_url + CALLBACK_PATH,
            "allowed_groups": ",".join(deployment.oidc_allowed_groups),
            "admin_groups": ",".join(deployment.oidc_admin_groups),
            "groups_claim": deployment.oidc_groups_claim,
            "users_db_uri": users_db_uri(server_uri),
        }
    return ctx
