"""auth oidc: the provider checked from the VM before anything changes, and the kit's own admin.

``check_provider`` reads the provider's discovery document from the VM (the VM is what
must reach it, with the CAs it trusts), checks that it names the configured issuer and
publishes the groups claim, and proves the client ID and secret at the token endpoint:
a token request with a code nobody issued is answered ``invalid_grant`` for a client
the provider authenticated and ``invalid_client`` for a wrong ID or secret (RFC 6749
section 5.2). Each failure names the setting, and comes before any change.

``admin_account`` gives the kit an identity on the plugin: an internal service
account named ``admin_username``, administrator, with an access token generated on
the VM (the plugin's own store issues it; it never leaves the VM but for the kit's
own API calls over SSH) and renewed a month before it expires.
"""

from __future__ import annotations

import json
import shlex
from urllib.parse import quote, urlencode

from provisioning import facts
from provisioning.auth import (
    CALLBACK_PATH,
    MIGRATION_LOCK_KEY,
    OIDC_SCHEMA,
    discovery_url,
    users_db_uri,
)
from provisioning.layout import PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import server_backend_uri
from provisioning.settings import Deployment, Secret
from provisioning.steps.conda import Environment
from provisioning.transport import Host, PreflightError

#: The code of the token request that proves the client's credentials: nobody issued it.
PROBE_CODE = "mlflow-kit-credentials-probe"

#: Runs as the service user with the new environment's python; JSON on stdin. Creates the
#: plugin's schema and tables (under the kit's migration lock), the kit's service account
#: and its token file. Prints {"done": [...]} (never the token).
ADMIN_SCRIPT = """
import json, os, sys, warnings
from datetime import datetime, timedelta, timezone
warnings.filterwarnings("ignore")
given = json.load(sys.stdin)
os.environ["OIDC_USERS_DB_URI"] = given["uri"]
import sqlalchemy
from mlflow_oidc_auth.db.utils import migrate
engine = sqlalchemy.create_engine(given["uri"], poolclass=sqlalchemy.pool.NullPool)
with engine.connect() as lock:
    lock.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": given["lock"]})
    lock.execute(sqlalchemy.text('CREATE SCHEMA IF NOT EXISTS "%s"' % given["schema"]))
    lock.commit()
    migrate(engine, "head")
engine.dispose()
from mlflow_oidc_auth.store import store
done, name, path = [], given["username"], given["token_file"]
if not store.has_user(name):
    store.create_user(name, "mlflow-kit", is_admin=True, is_service_account=True, written_by="manual")
    done.append(f"service account {name} created")
else:
    profile = store.get_user_profile(name)
    if not profile.is_admin or not getattr(profile, "active", True):
        store.update_user(name, is_admin=True, active=True, admin_override=True)
        done.append(f"{name} an active admin again")
try:
    with open(path) as handle:
        token = handle.read().strip()
except FileNotFoundError:
    token = ""
now = datetime.now(timezone.utc).replace(tzinfo=None)
mine = {t.name: t for t in store.list_user_tokens(name)}.get("mlflow-kit")
if not (token and mine and mine.expires_at - now > timedelta(days=30)
        and store.authenticate_user(name, token)):
    expires = now + timedelta(days=365)
    _record, token, _replaced = store.replace_user_token(name, "mlflow-kit", expires, "mlflow-kit")
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\\n")
    os.replace(path + ".new", path)
    done.append(f"{name}'s access token issued, until {expires:%Y-%m-%d}")
print(json.dumps({"done": done}))
"""


def check_provider(host: Host, deployment: Deployment) -> Outcome[None]:
    """The provider answers from the VM, names the issuer, publishes the groups claim and
    accepts the client's credentials; a failure names the setting, before any change."""
    if deployment.auth != "oidc":
        return unchanged(f"auth {deployment.auth}: no identity provider")
    issuer = deployment.oidc_issuer
    code, body = host.read(facts.https_get(discovery_url(issuer)))
    if code != "200":
        raise PreflightError(
            f"[{host.name}] oidc_issuer {issuer}: the provider's discovery document "
            f"{discovery_url(issuer)} is not readable from the host ({_answer(code, body)}). "
            "Check the URL, the firewall between them and, for a private CA, extra_ca_certs. "
            "Nothing was changed."
        )
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not document.get("token_endpoint"):
        raise PreflightError(
            f"[{host.name}] oidc_issuer {issuer}: {discovery_url(issuer)} is no OpenID Connect "
            "discovery document (no token_endpoint). Nothing was changed."
        )
    if str(document.get("issuer", "")).rstrip("/") != issuer:
        raise PreflightError(
            f"[{host.name}] oidc_issuer {issuer}: the provider calls itself "
            f"{document.get('issuer')!r}; set oidc_issuer to that. Nothing was changed."
        )
    claims = document.get("claims_supported")
    claim = deployment.oidc_groups_claim
    if isinstance(claims, list) and claim not in claims:
        raise PreflightError(
            f"[{host.name}] oidc_groups_claim {claim!r}: the provider does not publish that "
            f"claim (claims_supported: {', '.join(map(str, claims))}); name the claim that "
            "carries the groups, or have the provider add it. Nothing was changed."
        )
    code, body = host.read(
        facts.https_post_config(document["token_endpoint"]), stdin=_probe(deployment)
    )
    error = _error(body)
    if error == "invalid_client" or code == "401":
        raise PreflightError(
            f"[{host.name}] oidc_client_secret (or oidc_client_id {deployment.oidc_client_id}): "
            f"the provider refuses the client's credentials ({_answer(code, body)}). "
            "Nothing was changed."
        )
    if error == "unauthorized_client":
        raise PreflightError(
            f"[{host.name}] oidc_client_id {deployment.oidc_client_id}: the provider does not "
            "let this client use the authorization code flow. Nothing was changed."
        )
    if error != "invalid_grant":
        raise PreflightError(
            f"[{host.name}] oidc_issuer {issuer}: the token endpoint {document['token_endpoint']} "
            f"gave no OAuth answer ({_answer(code, body)}). Nothing was changed."
        )
    published = "published" if isinstance(claims, list) else "not listed by the provider"
    return unchanged(f"{issuer}: client accepted, groups claim {claim!r} {published}")


def _probe(deployment: Deployment) -> str:
    """A curl config: the client's credentials (client_secret_basic) and a form with a
    code nobody issued."""
    user = f"{quote(deployment.oidc_client_id, safe='')}:{quote(deployment.oidc_client_secret.reveal(), safe='')}"
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "code": PROBE_CODE,
            "redirect_uri": deployment.tracking_url + CALLBACK_PATH,
        }
    )
    return f'user = "{_curl_quote(user)}"\ndata = "{_curl_quote(form)}"\n'


def _curl_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _error(body: str) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return str(answer.get("error", "")) if isinstance(answer, dict) else ""


def _answer(code: str, body: str) -> str:
    if code in ("", "000"):
        return body.strip().splitlines()[-1] if body.strip() else "no answer"
    return f"HTTP {code}: {' '.join(body.split())[:200]}"


def admin_account(host: Host, deployment: Deployment, env: Environment) -> Outcome[Secret | None]:
    """auth oidc: the plugin's schema migrated, the kit's admin service account and its token
    (kept on the VM for the health gate, permissions, gc and metrics; returned too);
    nothing under basic auth."""
    if deployment.auth != "oidc":
        return unchanged(f"auth {deployment.auth}: MLflow keeps the admin", None)
    given = {
        "uri": users_db_uri(server_backend_uri(deployment)),
        "schema": OIDC_SCHEMA,
        "lock": MIGRATION_LOCK_KEY,
        "username": deployment.admin_username,
        "token_file": PATHS["oidc_admin_token"],
    }
    result = host.run(
        f"{env.prefix}/bin/python -c {shlex.quote(ADMIN_SCRIPT)}",
        user=USER,
        check=False,
        stdin=json.dumps(given),
        timeout=600,
    )
    if result.exited != 0:
        raise host.error("mlflow-oidc-auth accounts", result.exited, result.stderr or result.stdout)
    done = json.loads(result.stdout.strip().splitlines()[-1])["done"]
    token = Secret(host.read(facts.file_text(PATHS["oidc_admin_token"])))
    if done:
        return changed("; ".join(done), token)
    return unchanged(f"{deployment.admin_username}: admin service account with a live token", token)
