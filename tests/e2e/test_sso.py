"""Single sign-on and permissions as code, end to end: a real OpenID Connect provider
(tests/localcloud/oidc.py) on the local cloud, ``fab bootstrap`` with ``auth: oidc``, and
people signing in the way a browser does (authorization code with PKCE, through nginx).

The tests of this module share one host and run in order: the grants converge, people
sign in and see what their groups may see, a script logs with a token, logout ends the
session, a dropped grant goes, and bad settings stop bootstrap before anything changes.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import secrets
import subprocess
import sys
import textwrap
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

from tests.e2e.kit import fab, main_pids, objects_under, serving_copy, write_settings
from tests.localcloud.services import ARTIFACT_PREFIX

#: Every test here runs on a copy of the gcs host (``sso``).
pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("deployed", ["gcs"], indirect=True)]
#: The single sign-on server's own database, empty at its first bootstrap.
SSO_DB = "mlflow_sso"

#: Experiments the tests create; the settings grant on them.
EXPERIMENTS = ("team-a-exp", "team-b-exp", "private-exp")
PERMISSIONS = {
    "groups": {
        "team-a": {"experiments": {"team-a-exp": "EDIT"}},
        "team-b": {"experiments": {"team-b-exp": "EDIT"}},
    },
    "users": {"bob@example.test": {"experiments": {"team-a-exp": "READ"}}},
}
MAX_HOPS = 10


@pytest.fixture(scope="module")
def sso(deployed, local_cloud, host_factory, tmp_path_factory):
    """A copy of the gcs host (basic auth, an e2-small) bootstrapped again with auth oidc
    against the local cloud's provider, on an empty database of its own: a server moving to
    single sign-on."""
    provider = local_cloud.oidc_provider()
    host = serving_copy(host_factory, deployed["host"])
    try:
        url = f"https://{host.address}"
        client_id, client_secret = provider.register_client([f"{url}/callback"])
        settings = local_cloud.deployment_settings(host, "gcs", database=SSO_DB)
        settings["extra_ca_certs"] = [*settings["extra_ca_certs"], str(provider.ca_cert)]
        settings.update(
            auth="oidc",
            oidc_issuer=provider.issuer,
            oidc_client_id=client_id,
            oidc_client_secret=client_secret,
            oidc_allowed_groups=["mlflow-users"],
            oidc_admin_groups=["mlflow-admins"],
            permissions=PERMISSIONS,
        )
        folder = tmp_path_factory.mktemp("sso")
        path = write_settings(folder / "settings.yaml", settings)
        first = fab("bootstrap", "--settings", str(path))
        cert = folder / "server.crt"
        cert.write_text(host.ssh("sudo cat /etc/mlflow/tls/server.crt").stdout)
        token = host.ssh("sudo cat /var/lib/mlflow/kit-admin-token").stdout.strip()
        yield {
            "host": host, "url": url, "cert": str(cert), "settings": settings, "path": path,
            "folder": folder, "provider": provider, "first": first, "admin": ("admin", token),
        }  # fmt: skip
    finally:
        host_factory.discard(host)
        local_cloud.postgres.drop_database(SSO_DB)


def sign_in(sso: dict, sub: str) -> tuple[requests.Session, str]:
    """What a browser does: MLflow's /login, the provider's form (posting the subject),
    back to MLflow's callback; the session and where it ended. Redirects are followed by
    hand (bounded), each host with its own CA."""
    session = requests.Session()
    url, idp = f"{sso['url']}/login", sso["provider"].issuer
    for _ in range(MAX_HOPS):
        verify = str(sso["provider"].ca_cert) if url.startswith(idp) else sso["cert"]
        response = session.get(url, allow_redirects=False, timeout=30, verify=verify)
        if response.status_code == 200 and url.startswith(f"{idp}/oauth2/authorize"):
            assert "code_challenge=" in url and "code_challenge_method=S256" in url, url
            response = session.post(url, data={"sub": sub}, allow_redirects=False, timeout=30,
                                    verify=verify)  # fmt: skip
        if response.status_code not in (301, 302, 303, 307):
            return session, url
        url = urljoin(url, response.headers["location"])
    raise AssertionError(f"no end to the redirects for {sub} after {MAX_HOPS} hops")


def api(sso: dict, session, method: str, path: str, **kwargs) -> requests.Response:
    return session.request(method, f"{sso['url']}{path}", timeout=30, verify=sso["cert"], **kwargs)


def as_admin(sso: dict, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{sso['url']}{path}", auth=sso["admin"], timeout=30,
                            verify=sso["cert"], **kwargs)  # fmt: skip


def experiment_id(sso: dict, name: str) -> str:
    response = as_admin(sso, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": name})  # fmt: skip
    return response.json()["experiment"]["experiment_id"]


def visible(sso: dict, session) -> set[str]:
    response = api(
        sso, session, "POST", "/api/2.0/mlflow/experiments/search", json={"max_results": 100}
    )
    assert response.status_code == 200, response.text
    return {e["name"] for e in response.json().get("experiments", [])}


def personal_token(sso: dict, session) -> str:
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    response = api(sso, session, "POST", "/api/2.0/mlflow/users/current/tokens",
                   json={"name": "e2e-script", "expiration": expires.isoformat()})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["token"]


def provider_token(sso: dict, sub: str, redeem_with: str | None = None) -> requests.Response:
    """The provider's token response for ``sub``, obtained as this server's client with the
    authorization code and PKCE but without MLflow, as a command-line login helper does;
    ``redeem_with``: another code verifier than the one the challenge was made from."""
    provider, settings = sso["provider"], sso["settings"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = {
        "response_type": "code", "client_id": settings["oidc_client_id"],
        "redirect_uri": f"{sso['url']}/callback", "scope": "openid email profile",
        "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge.decode(), "code_challenge_method": "S256",
    }  # fmt: skip
    ca = str(provider.ca_cert)
    authorized = requests.post(f"{provider.issuer}/oauth2/authorize?{urlencode(query)}",
                               data={"sub": sub}, allow_redirects=False, timeout=30, verify=ca)  # fmt: skip
    code = parse_qs(urlsplit(authorized.headers["location"]).query)["code"][0]
    return requests.post(
        f"{provider.issuer}/oauth2/token", timeout=30, verify=ca,
        auth=(settings["oidc_client_id"], settings["oidc_client_secret"]),
        data={"grant_type": "authorization_code", "code": code,
              "code_verifier": redeem_with or verifier, "redirect_uri": f"{sso['url']}/callback"},
    )  # fmt: skip


def log_with_token(
    sso: dict, username: str | None, token: str, experiment: str
) -> subprocess.CompletedProcess:
    """A script that logs a run with the MLflow client, a token and no browser: a personal
    access token as the password of ``username``, or (``username`` None) the provider's
    token as MLFLOW_TRACKING_TOKEN."""
    script = textwrap.dedent(f"""
        import mlflow
        mlflow.set_experiment({experiment!r})
        with mlflow.start_run():
            mlflow.log_param("who", {username!r})
            mlflow.log_metric("loss", 0.25)
        print("logged")
    """)
    env = {
        "PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": sso["url"],
        "MLFLOW_TRACKING_SERVER_CERT_PATH": sso["cert"], "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }  # fmt: skip
    if username is None:
        env["MLFLOW_TRACKING_TOKEN"] = token
    else:
        env.update(MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=token)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def bootstrap(sso: dict, settings: dict | None = None, name: str = "settings.yaml", check=True):
    path = sso["path"] if settings is None else write_settings(sso["folder"] / name, settings)
    return fab("bootstrap", "--settings", str(path), check=check)


def test_grants_converge_and_a_second_bootstrap_changes_nothing(sso):
    assert "identity provider" in sso["first"].stdout and "client accepted" in sso["first"].stdout
    assert "waiting" in sso["first"].stdout  # the experiments do not exist yet
    for name in EXPERIMENTS:
        response = as_admin(sso, "POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
        assert response.status_code == 200, response.text
    sign_in(sso, "bob")  # a user grant applies once the user is known
    second = bootstrap(sso)
    assert "3 granted, 0 changed, 0 removed" in second.stdout, second.stdout
    third = bootstrap(sso)
    assert " 0 changed" in third.stdout, third.stdout
    listed = fab("users", "--settings", str(sso["path"])).stdout
    rows = [line.split() for line in listed.splitlines()]
    assert [
        "group",
        "team-a",
        "experiment",
        "team-a-exp",
        "EDIT",
        "group",
        "(fab",
        "bootstrap)",
    ] in rows
    assert [
        "user",
        "bob@example.test",
        "experiment",
        "team-a-exp",
        "READ",
        "user",
        "(fab",
        "bootstrap)",
    ] in rows


def test_a_member_of_an_allowed_group_sees_only_what_their_groups_may_read(sso):
    alice, ended = sign_in(sso, "alice")
    current = api(sso, alice, "GET", "/api/2.0/mlflow/users/current")
    assert current.status_code == 200 and current.json()["username"] == "alice@example.test"
    assert visible(sso, alice) == {"team-a-exp"}
    run = api(sso, alice, "POST", "/api/2.0/mlflow/runs/create",
              json={"experiment_id": experiment_id(sso, "team-a-exp")})  # fmt: skip
    assert run.status_code == 200, run.text
    denied = api(sso, alice, "POST", "/api/2.0/mlflow/runs/create",
                 json={"experiment_id": experiment_id(sso, "private-exp")})  # fmt: skip
    assert denied.status_code == 403, denied.text


@pytest.mark.parametrize("sub", ["mallory", "carol"])
def test_a_user_outside_the_allowed_groups_is_refused(sso, sub):
    session, _ended = sign_in(sso, sub)  # mallory: another group; carol: no groups claim
    assert api(sso, session, "GET", "/api/2.0/mlflow/users/current").status_code == 401
    assert api(sso, session, "POST", "/api/2.0/mlflow/experiments/search",
               json={"max_results": 10}).status_code == 401  # fmt: skip


def test_a_script_logs_a_run_with_a_token_and_a_read_grant_cannot_log(sso):
    alice, _ = sign_in(sso, "alice")
    logged = log_with_token(sso, "alice@example.test", personal_token(sso, alice), "team-a-exp")
    assert logged.returncode == 0 and "logged" in logged.stdout, logged.stderr[-2000:]
    bob, _ = sign_in(sso, "bob")
    assert visible(sso, bob) == {"team-a-exp", "team-b-exp"}  # his group's, and READ on team-a's
    refused = log_with_token(sso, "bob@example.test", personal_token(sso, bob), "team-a-exp")
    # The plugin answers 403 with error_code INTERNAL_ERROR and "Permission denied".
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr[-2000:]
    denied = api(sso, bob, "POST", "/api/2.0/mlflow/runs/create",
                 json={"experiment_id": experiment_id(sso, "team-a-exp")})  # fmt: skip
    assert denied.status_code == 403, denied.text


def test_a_ci_job_logs_with_the_providers_token(sso):
    response = provider_token(sso, "alice")
    assert response.status_code == 200, response.text
    logged = log_with_token(sso, None, response.json()["id_token"], "team-a-exp")
    assert logged.returncode == 0 and "logged" in logged.stdout, logged.stderr[-2000:]
    # PKCE holds at the provider: a code redeemed with another verifier gets no token.
    intercepted = provider_token(sso, "alice", redeem_with="x" * 43)
    assert intercepted.status_code == 400 and "invalid_grant" in intercepted.text


def test_logout_ends_the_session(sso):
    alice, _ = sign_in(sso, "alice")
    cookies = alice.cookies.copy()
    assert api(sso, alice, "GET", "/api/2.0/mlflow/users/current").status_code == 200
    response = api(sso, alice, "GET", "/logout", allow_redirects=False)
    assert response.status_code in (302, 303, 307)
    assert api(sso, alice, "GET", "/api/2.0/mlflow/users/current").status_code == 401
    replay = requests.Session()
    replay.cookies.update(cookies)  # the cookie from before the logout, kept by an attacker
    assert api(sso, replay, "GET", "/api/2.0/mlflow/users/current").status_code == 401


def test_a_grant_removed_from_the_settings_is_removed(sso):
    settings = {**sso["settings"], "permissions": {"groups": PERMISSIONS["groups"]}}
    changed = bootstrap(sso, settings, "without-bob.yaml")
    assert "0 granted, 0 changed, 1 removed" in changed.stdout, changed.stdout
    grant = as_admin(sso, "GET", "/api/2.0/mlflow/permissions/users/bob%40example.test/experiments/"
                     + experiment_id(sso, "team-a-exp"))  # fmt: skip
    assert grant.status_code == 404, grant.text
    bob, _ = sign_in(sso, "bob")
    assert visible(sso, bob) == {"team-b-exp"}
    assert " 0 changed" in bootstrap(sso, settings, "without-bob.yaml").stdout


def server_state(host) -> tuple[dict, str]:
    digest = hashlib.sha256(host.ssh("sudo cat /etc/mlflow/mlflow.env").stdout.encode()).hexdigest()
    return main_pids(host), digest


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"oidc_issuer": "https://{services}:9"}, "oidc_issuer"),
        ({"oidc_client_secret": "not-the-secret"}, "oidc_client_secret"),
        ({"oidc_groups_claim": "roles"}, "oidc_groups_claim"),
    ],
    ids=["unreachable-issuer", "wrong-client-secret", "missing-groups-claim"],
)
def test_bad_provider_settings_stop_bootstrap_before_any_change(sso, change, named):
    services = sso["provider"].address
    change = {k: v.replace("{services}", services) for k, v in change.items()}
    before = server_state(sso["host"])
    failed = bootstrap(sso, {**sso["settings"], **change}, f"bad-{named}.yaml", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert named in failed.stderr and "Nothing was changed" in failed.stderr, failed.stderr
    assert server_state(sso["host"]) == before


def test_metrics_and_gc_act_as_the_kits_service_account(sso, local_cloud, monkeypatch):
    import mlflow

    url, cert = f"{sso['url']}/metrics", sso["cert"]
    assert requests.get(url, verify=cert, timeout=30).status_code == 401
    answer = requests.get(url, verify=cert, timeout=30, auth=sso["admin"])
    assert answer.status_code == 200, answer.text[:500]
    # mlflow-metrics read every instance's own metrics with the kit's token.
    up = [line for line in answer.text.splitlines() if line.startswith("mlflow_kit_instance_up{")]
    assert up and all(line.endswith(" 1.0") for line in up), up
    alice, _ = sign_in(sso, "alice")  # signed in, and no administrator
    assert api(sso, alice, "GET", "/metrics").status_code == 403

    # gc deletes a deleted run's artifacts through the server, signed with the kit's token.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sso["url"])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", sso["admin"][0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", sso["admin"][1])
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", cert)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("gc-under-sso")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "to be collected", "junk/file.txt")
    prefix = f"{ARTIFACT_PREFIX}/{experiment}/{run.info.run_id}/"

    def stored() -> list:
        return objects_under({"backend": "gcs", "cloud": local_cloud}, prefix)

    assert stored()
    client.delete_run(run.info.run_id)
    time.sleep(2)
    # The installed program with the unit's user and env file; only the age differs.
    sso["host"].ssh(
        "sudo systemd-run --wait --quiet -p User=mlflow -p EnvironmentFile=/etc/mlflow/mlflow.env "
        "-p Environment=MLFLOW_KIT_GC_OLDER_THAN=1s /opt/mlflow/current/bin/python "
        "/opt/mlflow/bin/mlflow-gc",
        check=False,
    )
    last = json.loads(sso["host"].ssh("sudo cat /var/lib/mlflow/gc-last.json").stdout)
    assert last["result"] == "success" and last["runs"] == 1, last
    assert not stored()


def test_a_restore_brings_back_the_plugins_grants_and_the_kit_still_signs_in(sso):
    path, host = str(sso["path"]), sso["host"]
    taken = fab("backup", "--settings", path)
    backup_id = re.search(r"backup ID: (\S+)", taken.stdout).group(1)
    team_a = experiment_id(sso, "team-a-exp")
    # After the backup: team-a's grant revoked in the plugin, an experiment made.
    revoked = as_admin(
        sso, "DELETE", f"/api/2.0/mlflow/permissions/groups/team-a/experiments/{team_a}"
    )
    assert revoked.status_code in (200, 204), revoked.text
    alice, _ = sign_in(sso, "alice")
    assert visible(sso, alice) == set()
    made = as_admin(
        sso, "POST", "/api/2.0/mlflow/experiments/create", json={"name": "after-backup"}
    )
    assert made.status_code == 200, made.text

    # The servers come back behind the health gate, which signs in as the kit's account.
    restored = fab("restore", "--from", backup_id, "--settings", path, "--yes")
    assert "health gate" in restored.stdout, restored.stdout
    alice, _ = sign_in(sso, "alice")
    assert visible(sso, alice) == {"team-a-exp"}
    token = host.ssh("sudo cat /var/lib/mlflow/kit-admin-token").stdout.strip()
    gone = requests.get(f"{sso['url']}/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": "after-backup"}, auth=("admin", token),
                        timeout=30, verify=sso["cert"])  # fmt: skip
    assert gone.status_code == 404, gone.text
    # A bootstrap afterwards finds the grants as the settings (without bob's) want them.
    settings = {**sso["settings"], "permissions": {"groups": PERMISSIONS["groups"]}}
    again = bootstrap(sso, settings, "without-bob.yaml").stdout
    assert "2 grant(s) as set" in again, again
