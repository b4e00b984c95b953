"""Bootstrap steps against a scripted host: exact commands, and "nothing to do" when state matches."""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field

import pytest

from provisioning import facts, steps
from provisioning.remote import PreflightError, RemoteError, Runner, parse_file_state
from provisioning.settings import Deployment

URI = "postgresql+psycopg2://mlflow:p%40ss@10.0.0.5:5432/mlflow?sslmode=require"


def deployment(**changes) -> Deployment:
    values = dict(
        host="203.0.113.10",
        ssh_user="admin",
        cloud="gcp",
        environment="dev",
        backend_store_uri=URI,
        artifacts_destination="gs://bucket/mlflow",
        admin_password="a-long-admin-password",
    )
    values.update(changes)
    return Deployment(**values)


@dataclass
class Result:
    stdout: str = ""
    stderr: str = ""
    exited: int = 0


@dataclass
class ScriptedHost:
    """A Fabric connection double: answers commands by regex, records every command run."""

    answers: list[tuple[str, Result]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    host: str = "203.0.113.10"
    user: str = "admin"

    def on(self, pattern: str, stdout: str = "", exited: int = 0, stderr: str = "") -> ScriptedHost:
        self.answers.append((pattern, Result(stdout, stderr, exited)))
        return self

    raw: list[str] = field(default_factory=list)

    def run(self, command, **_kwargs):
        self.raw.append(command)
        # Record and match what runs on the host, inside Runner's `sudo -n sh -c '...'`.
        words = shlex.split(command)
        inner = words[-1] if words[:1] == ["sudo"] and words[-3:-1] == ["sh", "-c"] else command
        self.commands.append(inner)
        for pattern, result in self.answers:
            if re.search(pattern, inner):
                return result
        return Result()

    def put(self, stream, remote):
        self.uploads.append(stream.read())

    def ran(self, pattern: str) -> list[str]:
        return [c for c in self.commands if re.search(pattern, c)]


def runner_for(host: ScriptedHost) -> Runner:
    return Runner(host, out=lambda _line: None)


# --- facts: pure parsers on recorded output -------------------------------------------------

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
LIST_UNITS = (
    "mlflow-server@5001.service loaded active running MLflow tracking server (port 5001)\n"
    "mlflow-server@5002.service loaded failed failed MLflow tracking server (port 5002)\n"
)


def test_parsers_read_recorded_output():
    assert facts.parse_os_release(OS_RELEASE)["VERSION_ID"] == "12"
    assert facts.parse_resources("2\n4030000\n20480000\n") == facts.Resources(2, 3935, 20000)
    assert facts.parse_installed_packages(
        "nginx installed\nopenssl installed\ncurl not-installed\nbzip2 config-files\n"
    ) == {"nginx", "openssl"}
    assert facts.parse_server_instances(LIST_UNITS) == {5001: "active", 5002: "failed"}
    assert parse_file_state("missing").exists is False
    state = parse_file_state("600 mlflow mlflow\nabc123  /etc/mlflow/mlflow.env\n")
    assert (state.mode, state.owner, state.sha256) == ("0600", "mlflow", "abc123")


@pytest.mark.parametrize(
    ("cores", "memory_mb", "expected"),
    [
        (1, 1024, 1),
        (2, 2048, 2),
        (2, 1000, 1),
        (4, 16000, 4),
        (32, 64000, 8),
    ],
)
def test_server_instances_follow_cores_and_memory(cores, memory_mb, expected):
    assert facts.server_instances_for(facts.Resources(cores, memory_mb, 10000)) == expected


# --- exact commands -------------------------------------------------------------------------


def test_conda_commands_are_exact():
    assert steps.conda_env_commands("/opt/mlflow/envs/0123abcd") == [
        "/opt/miniforge/bin/conda env create --quiet --prefix /opt/mlflow/envs/0123abcd "
        "--file /etc/mlflow/environment.yml",
        "touch /opt/mlflow/envs/0123abcd/.kit-complete",
    ]


def test_miniforge_downloads_verifies_the_pinned_sha_then_installs():
    host = (
        ScriptedHost()
        .on(r"test -x /opt/miniforge/bin/conda", exited=1)
        .on(r"mktemp -d", "/tmp/tmp.x\n")
    )
    d = deployment()
    assert steps.miniforge(runner_for(host), d) is True
    curl = host.ran(r"curl ")[0]
    assert d.miniforge_url in curl and "-o /tmp/tmp.x/miniforge.sh" in curl
    assert host.ran(
        re.escape(f"echo '{d.miniforge_sha256}  /tmp/tmp.x/miniforge.sh' | sha256sum -c")
    )
    assert host.ran(r"bash /tmp/tmp.x/miniforge.sh -b -p /opt/miniforge")
    assert host.ran(r"rm -rf /tmp/tmp.x")


def test_miniforge_already_installed_is_left_alone():
    host = ScriptedHost()
    assert steps.miniforge(runner_for(host), deployment()) is False
    assert not host.ran(r"curl|bash ")


def test_migration_runs_the_unit_once_per_version_and_environment():
    host = ScriptedHost().on(r"test -e /var/lib/mlflow/migrated-", exited=1)
    changed, _ = steps.migrate(runner_for(host), deployment(), "envhash")
    assert changed
    assert host.ran(r"^systemctl start mlflow-migrate.service$")
    assert "sudo -n sh -c 'systemctl start mlflow-migrate.service'" in host.raw
    assert host.ran(r"/var/lib/mlflow/migrated-3\.17\.2-envhash")

    done = ScriptedHost()
    assert steps.migrate(runner_for(done), deployment(), "envhash") == (False, "")
    assert not done.ran(r"systemctl start")


def test_failed_migration_stops_with_its_own_error_and_leaves_the_marker_unwritten():
    host = (
        ScriptedHost()
        .on(r"test -e /var/lib/mlflow/migrated-", exited=1)
        .on(r"systemctl start mlflow-migrate", exited=1)
        .on(
            r"journalctl -u mlflow-migrate",
            "alembic.util.exc.CommandError: Can't locate revision\n",
        )
    )
    with pytest.raises(RemoteError) as error:
        steps.migrate(runner_for(host), deployment(), "envhash")
    message = str(error.value)
    assert "203.0.113.10" in message and "systemctl start mlflow-migrate.service" in message
    assert "Can't locate revision" in message
    assert not host.ran(r"install -m 0644 .* /var/lib/mlflow/migrated-")


# --- nothing to do when state matches -----------------------------------------------------------


def test_service_user_and_directories_already_right_change_nothing():
    host = ScriptedHost()
    for path, owner, group, mode in (
        ("/etc/mlflow ", "root", "mlflow", "750"),
        ("/etc/mlflow/tls ", "root", "mlflow", "750"),
        ("/var/lib/mlflow ", "mlflow", "mlflow", "750"),
        ("/opt/mlflow ", "root", "root", "755"),
        ("/opt/mlflow/envs ", "root", "root", "755"),
        ("/opt/mlflow/bin ", "root", "root", "755"),
    ):
        host.on(re.escape(f"stat -c '%a %U %G' {path}"), f"{mode} {owner} {group}\n")
    assert steps.service_user(runner_for(host)) is False
    assert not host.ran(r"useradd|install -d")


def test_missing_service_user_is_created_without_a_login_shell():
    host = ScriptedHost().on(r"^id -u mlflow", exited=1)
    assert steps.service_user(runner_for(host)) is True
    useradd = host.ran(r"useradd")[0]
    assert "--system" in useradd and "--shell /usr/sbin/nologin" in useradd


def test_installed_packages_skip_apt():
    listing = "".join(f"{p} installed\n" for p in steps.SYSTEM_PACKAGES)
    host = ScriptedHost().on(r"dpkg-query", listing)
    assert steps.system_packages(runner_for(host)) == (False, "")
    assert not host.ran(r"apt-get")


def test_missing_packages_are_installed_with_services_held_back():
    host = ScriptedHost().on(r"dpkg-query", "openssl installed\ncurl installed\n")
    changed, detail = steps.system_packages(runner_for(host))
    assert changed and "nginx" in detail
    install = host.ran(r"apt-get install")[0]
    assert "nginx" in install and "openssl" not in install
    assert host.commands.index(host.ran(r"policy-rc.d")[0]) < host.commands.index(install)


def test_unchanged_file_is_not_uploaded():
    content = "KEY=value\n"
    digest = hashlib.sha256(content.encode()).hexdigest()
    host = ScriptedHost().on(r"stat -c", f"600 mlflow mlflow\n{digest}  /etc/mlflow/mlflow.env\n")
    assert (
        runner_for(host).ensure_file(
            "/etc/mlflow/mlflow.env", content, mode="0600", owner="mlflow", group="mlflow"
        )
        is False
    )
    assert host.uploads == []


def test_changed_secret_file_is_uploaded_over_sftp_and_installed_0600():
    host = ScriptedHost().on(r"stat -c", "missing\n").on(r"^mktemp -d$", "/tmp/tmp.y\n")
    secret = 'MLFLOW_AUTH_ADMIN_PASSWORD="s3cret-value"\n'
    assert (
        runner_for(host).ensure_file(
            "/etc/mlflow/mlflow.env", secret, mode="0600", owner="mlflow", group="mlflow"
        )
        is True
    )
    assert host.uploads == [secret.encode()]
    assert host.ran(r"install -D -m 0600 -o mlflow -g mlflow /tmp/tmp.y/upload")
    assert not any("s3cret-value" in c for c in host.commands)


def test_running_servers_are_not_restarted_when_nothing_they_read_changed():
    host = ScriptedHost().on(r"list-units", LIST_UNITS.replace("failed failed", "active running"))
    host.on(r"is-enabled", "enabled\n")
    assert steps.server_units(
        runner_for(host), [5001, 5002], restart=False, unit_changed=False
    ) == (False, "")
    assert not host.ran(r"systemctl (restart|enable|disable)")


def test_servers_restart_when_told_and_surplus_instances_stop():
    host = ScriptedHost().on(r"list-units", LIST_UNITS).on(r"is-enabled", "enabled\n")
    changed, detail = steps.server_units(runner_for(host), [5001], restart=True, unit_changed=True)
    assert changed
    assert host.ran(r"systemctl daemon-reload")
    assert host.ran(r"systemctl disable --now mlflow-server@5002.service")
    assert host.ran(r"systemctl restart mlflow-server@5001.service")
    assert "stopped 5002" in detail


# --- preflight ------------------------------------------------------------------------------------


def preflight_host(**answers) -> ScriptedHost:
    host = ScriptedHost()
    for pattern, (stdout, exited) in answers.items():
        host.on(pattern, stdout, exited)
    host.on(r"cat /etc/os-release", OS_RELEASE).on(r"nproc", "2\n4030000\n20480000\n")
    return host


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({r"^true$": ("", 1)}, "cannot run sudo without a password"),
        (
            {
                r"cat /etc/os-release": (
                    'PRETTY_NAME="Ubuntu 22.04"\nID=ubuntu\nVERSION_ID="22.04"\n',
                    0,
                )
            },
            "unsupported OS 'Ubuntu 22.04'",
        ),
        ({r"nproc": ("2\n4030000\n1024\n", 0)}, "only 1 MB free on /"),
        ({r"/dev/tcp/10\.0\.0\.5/5432": ("", 1)}, "the database at 10.0.0.5:5432 is not reachable"),
    ],
    ids=["no-sudo", "wrong-os", "no-disk", "database-unreachable"],
)
def test_preflight_fails_naming_what_is_wrong_and_changes_nothing(answers, message):
    host = preflight_host(**answers)
    with pytest.raises(PreflightError, match=re.escape(message)):
        steps.preflight(runner_for(host), deployment())
    assert not host.ran(r"apt-get|useradd|install |rm |mv |ln |systemctl (start|restart|enable)")


def test_preflight_checks_the_storage_endpoint_when_one_is_set():
    host = preflight_host(**{r"/dev/tcp/10\.0\.0\.6/9000": ("", 1)})
    d = deployment(
        cloud="local",
        artifacts_destination="s3://bucket/prefix",
        storage_env={"MLFLOW_S3_ENDPOINT_URL": "http://10.0.0.6:9000"},
    )
    with pytest.raises(PreflightError, match="the artifact store at 10.0.0.6:9000"):
        steps.preflight(runner_for(host), d)


def test_restart_restarts_exactly_the_instances_present():
    from provisioning.server_tasks import restart_servers

    host = ScriptedHost().on(r"list-units", LIST_UNITS)
    assert restart_servers(runner_for(host)) == (True, "restarted 2 instance(s)")
    assert host.ran(r"^systemctl restart mlflow-server@5001.service mlflow-server@5002.service$")


def test_restart_on_a_host_without_the_kit_says_to_bootstrap_first():
    from provisioning.server_tasks import restart_servers

    with pytest.raises(RemoteError, match="run fab bootstrap first"):
        restart_servers(runner_for(ScriptedHost()))
