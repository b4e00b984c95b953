"""auth oidc and permissions as code: the settings, what the servers get, and the plan."""

from __future__ import annotations

import pytest

from provisioning import lock
from provisioning.auth import users_db_uri
from provisioning.render import context, render
from provisioning.settings import Deployment, SettingsError
from provisioning.steps.permissions import desired, plan
from tests.unit.conftest import valid_settings

OIDC = {
    "auth": "oidc",
    "oidc_issuer": "https://idp.example.com/realms/acme/",
    "oidc_client_id": "mlflow",
    "oidc_client_secret": "client-secret-1",
    "oidc_allowed_groups": ["mlflow-users"],
    "oidc_admin_groups": ["mlflow-admins"],
}


def oidc(**changes) -> Deployment:
    return Deployment(**valid_settings(**{**OIDC, **changes}))


def test_basic_stays_the_default_and_grants_no_groups():
    deployment = Deployment(**valid_settings())
    assert deployment.auth == "basic"
    with pytest.raises(SettingsError) as raised:
        Deployment(
            **valid_settings(permissions={"groups": {"team": {"experiments": {"e": "READ"}}}})
        )
    assert raised.value.key == "permissions.groups"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"auth": "saml"}, "auth"),
        ({"oidc_issuer": None}, "oidc_issuer"),
        ({"oidc_issuer": "http://idp.example.com"}, "oidc_issuer"),
        ({"oidc_client_id": ""}, "oidc_client_id"),
        ({"oidc_client_secret": None}, "oidc_client_secret"),
        ({"oidc_allowed_groups": []}, "oidc_allowed_groups"),
        ({"oidc_allowed_groups": "mlflow-users"}, "oidc_allowed_groups"),
        ({"oidc_allowed_groups": ["a,b"]}, "oidc_allowed_groups"),
        ({"oidc_groups_claim": ""}, "oidc_groups_claim"),
        ({"oidc_plugin_version": "11.0.2"}, "oidc_plugin_version"),
        ({"permissions": {"default": "WRITE"}}, "permissions.default"),
        ({"permissions": {"workspaces": {}}}, "permissions.workspaces"),
        (
            {"permissions": {"users": {"a": {"experiments": {"e": "OWNER"}}}}},
            "permissions.users.a.experiments.e",
        ),
        ({"permissions": {"users": {"a": {"runs": {}}}}}, "permissions.users.a.runs"),
        ({"permissions": {"teams": {}}}, "permissions.teams"),
        ({"stream_downloads": True}, "stream_downloads"),
    ],
)
def test_bad_auth_settings_name_their_key(changes, key):
    with pytest.raises(SettingsError) as raised:
        oidc(**changes)
    assert raised.value.key == key


def test_the_client_secret_never_shows():
    deployment = oidc()
    assert "client-secret-1" not in repr(deployment) + str(deployment.redacted())
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(oidc_client_secret="client-secret-1"))
    assert raised.value.key == "oidc_client_secret" and "client-secret-1" not in str(raised.value)


def test_plugin_11_runs_with_python_3_12():
    assert oidc(oidc_plugin_version="11.0.2", python_version="3.12").oidc_plugin_version == "11.0.2"


def render_for(deployment: Deployment, template: str) -> str:
    ctx = context(deployment, server_ports=[5001], flask_secret_key="f" * 32,
                  job_execution=False, kek_passphrase="k" * 40)  # fmt: skip
    return render(template, ctx)


def test_the_servers_run_the_plugin_with_the_providers_settings():
    deployment = oidc(permissions={"default": "READ"})
    assert "--app-name oidc-auth" in render_for(deployment, "mlflow-server@.service.j2")
    environment_yml = render_for(deployment, "environment.yml.j2")
    plugin_lock = lock.find(deployment.mlflow_version, "10.1.3")
    assert f"-r /opt/mlflow/locks/{plugin_lock.host_name}" in environment_yml
    assert "\nmlflow-oidc-auth==10.1.3 \\\n" in plugin_lock.text
    env = render_for(deployment, "mlflow.env.j2")
    for line in (
        'OIDC_DISCOVERY_URL="https://idp.example.com/realms/acme/.well-known/openid-configuration"',
        'OIDC_ISSUER="https://idp.example.com/realms/acme"',
        'OIDC_CLIENT_SECRET="client-secret-1"',
        'OIDC_REDIRECT_URI="https://203.0.113.10/callback"',
        'OIDC_GROUP_NAME="mlflow-users"',
        'OIDC_ADMIN_GROUP_NAME="mlflow-admins"',
        'DEFAULT_MLFLOW_PERMISSION="READ"',
        'SESSION_COOKIE_SECURE="true"',
    ):
        assert line in env.splitlines()
    basic = Deployment(**valid_settings())
    # By default the kit's app around basic-auth (streamed downloads).
    assert "--app-name kit-streaming" in render_for(basic, "mlflow-server@.service.j2")
    assert "OIDC_" not in render_for(basic, "mlflow.env.j2")
    assert "mlflow-oidc-auth" not in render_for(basic, "environment.yml.j2")


def test_the_plugins_tables_live_in_their_own_schema():
    uri = users_db_uri("postgresql+psycopg2://u:p%40ss@db/mlflow?sslmode=verify-full&options=-cx")
    assert uri == ("postgresql+psycopg2://u:p%40ss@db/mlflow?sslmode=verify-full"
                   "&options=-csearch_path%3Dmlflow_oidc_auth")  # fmt: skip


def test_default_permission_follows_the_mode_unless_set():
    assert "default_permission = READ" in render_for(
        Deployment(**valid_settings()), "basic_auth.ini.j2"
    )
    assert 'DEFAULT_MLFLOW_PERMISSION="NO_PERMISSIONS"' in render_for(oidc(), "mlflow.env.j2")


STATE = {"experiments": {"a": "1", "b": "2", "gone": None}, "models": {"m": True},
         "users": ["alice", "admin"], "groups": ["team-a"]}  # fmt: skip


@pytest.mark.parametrize(
    ("want", "current", "owned", "exclusive", "ops", "waiting"),
    [
        # Nothing set, nothing there: nothing to do.
        ({}, {}, set(), False, [], []),
        # A new group grant, its group created first; a user grant updated (not taken over).
        ({("group", "team-b", "experiments", "a"): "READ", ("user", "alice", "experiments", "b"): "EDIT"},
         {("user", "alice", "experiments", "b"): "READ"}, set(), False,
         [["create-group", "group", "team-b", "", "", None],
          ["create", "group", "team-b", "experiments", "a", "READ"],
          ["update", "user", "alice", "experiments", "b", "EDIT"]], []),
        # As set: nothing; a grant on a missing experiment and one for an unknown user wait.
        ({("group", "team-a", "experiments", "a"): "READ", ("group", "team-a", "experiments", "gone"): "READ",
          ("user", "zed", "registered_models", "m"): "READ"},
         {("group", "team-a", "experiments", "a"): "READ"}, set(), False, [],
         [("group", "team-a", "experiments", "gone"), ("user", "zed", "registered_models", "m")]),
        # Dropped from the settings: the kit's own grant goes, one made by hand stays.
        ({}, {("user", "alice", "experiments", "a"): "EDIT", ("group", "team-a", "experiments", "b"): "READ"},
         {("user", "alice", "experiments", "a")}, False,
         [["delete", "user", "alice", "experiments", "a", None]], []),
        # exclusive: every other grant on the named resources goes, but the kit's admin's.
        ({("group", "team-a", "experiments", "a"): "READ"},
         {("group", "team-a", "experiments", "a"): "READ", ("user", "alice", "experiments", "a"): "EDIT",
          ("user", "admin", "experiments", "a"): "MANAGE"}, set(), True,
         [["delete", "user", "alice", "experiments", "a", None]], []),
    ],
    ids=["nothing", "create-and-update", "as-set-and-waiting", "drop-own-only", "exclusive"],
)  # fmt: skip
def test_plan(want, current, owned, exclusive, ops, waiting):
    result = plan(want, current, owned, STATE, mode="oidc", exclusive=exclusive, admin="admin")
    assert result.ops == ops
    assert [key for key, _why in result.waiting] == waiting


def test_a_record_whose_grant_is_gone_is_forgotten():
    gone = ("user", "alice", "experiments", "a")
    result = plan({}, {}, {gone}, STATE, mode="oidc", exclusive=False, admin="admin")
    assert result.ops == [] and result.forget == [gone]


def test_desired_lists_every_grant_of_the_settings():
    deployment = oidc(permissions={
        "groups": {"team-a": {"experiments": {"a": "EDIT"}, "registered_models": {"m": "READ"}}},
        "users": {"alice@example.com": {"experiments": {"b": "MANAGE"}}},
    })  # fmt: skip
    assert desired(deployment) == {
        ("group", "team-a", "experiments", "a"): "EDIT",
        ("group", "team-a", "registered_models", "m"): "READ",
        ("user", "alice@example.com", "experiments", "b"): "MANAGE",
    }


def test_the_oidc_bootstrap_checks_the_provider_first_and_issues_the_kits_token_before_the_gate():
    from provisioning import facts, plays
    from provisioning.settings import Secret
    from provisioning.steps.conda import Environment
    from provisioning.steps.schema import Schema, SchemaPlan
    from provisioning.steps.secrets import ServerSecrets
    from tests.unit.test_plays import RecordingPlay

    token = Secret("mlf_0123abcd_secret")
    recording = RecordingPlay({
        "preflight": facts.Resources(2, 4000, 20000),
        "server secrets": ServerSecrets("k" * 64, "p" * 48, 1),
        "conda environment": Environment("/opt/mlflow/envs/0123456789abcdef"),
        "configuration files": frozenset(),
        "schema check": SchemaPlan("3.17.2", Schema("a", "a", True, 0), Schema("b", "b", True, 0)),
        "oidc accounts": token,
        "tls certificate": frozenset(),
    })  # fmt: skip
    plays.bootstrap(recording, oidc())
    names = [name for name, _f, _a in recording.steps]
    assert "admin password" not in names  # MLflow's basic-auth admin is not the kit's here
    # The provider before anything the servers read; the accounts before the servers switch.
    assert names.index("identity provider") < names.index("database certificate")
    assert (
        names.index("schema migration")
        < names.index("oidc accounts")
        < names.index("activate environment")
    )
    # The gate signs in with the token the accounts step kept on the VM (step case
    # health/oidc-kit-token.yaml); the grants follow a proven server.
    assert names.index("oidc accounts") < names.index("health gate") < names.index("permissions")


def test_storage_env_cannot_set_the_plugins_settings():
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(storage_env={"OIDC_CLIENT_SECRET": "x"}))
    assert raised.value.key == "storage_env.OIDC_CLIENT_SECRET"


def test_downloads_stream_by_default_wherever_the_kit_app_can_run():
    """kit-streaming wraps basic-auth, and mlflow server shares the jobs' token only with
    an app named basic-auth: on by default with basic auth and no jobs, off otherwise."""
    assert Deployment(**valid_settings()).stream_downloads is True
    assert Deployment(**valid_settings(job_execution=True)).stream_downloads is False
    assert oidc().stream_downloads is False
    assert Deployment(**valid_settings(stream_downloads=False)).stream_downloads is False
