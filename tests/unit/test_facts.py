"""Facts: pure parsers on recorded output, and the sizing rules read from them."""

from __future__ import annotations

from provisioning import facts
from provisioning.steps import conda

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'


def test_parsers_read_recorded_output():
    assert facts.parse_os_release(OS_RELEASE)["VERSION_ID"] == "12"
    assert facts.parse_resources("2\n4030000\n20480000\n") == facts.Resources(2, 3935, 20000)
    # In a container the cgroup's limit is the memory there is, not the machine's.
    assert facts.parse_resources("2\n24000000\n20480000\n2147483648\n") == facts.Resources(
        2, 2048, 20000
    )
    assert facts.parse_resources("2\n4030000\n20480000\nmax\n") == facts.Resources(2, 3935, 20000)
    # cgroup v1 says "no limit" with a huge number.
    unlimited = "2\n4030000\n20480000\n9223372036854771712\n"
    assert facts.parse_resources(unlimited) == facts.Resources(2, 3935, 20000)
    assert facts.parse_installed_packages(
        "nginx installed\nopenssl installed\ncurl not-installed\nbzip2 config-files\n"
    ) == {"nginx", "openssl"}
    assert facts.parse_file_state("missing").exists is False
    state = facts.parse_file_state("600 mlflow mlflow\nabc123  /etc/mlflow/mlflow.env\n")
    assert (state.mode, state.owner, state.sha256) == ("0600", "mlflow", "abc123")
    assert facts.parse_path_state("750 root mlflow\n") == facts.PathState(
        True, "750", "root", "mlflow"
    )
    assert facts.parse_path_state("missing\n") == facts.PathState(False)
    assert facts.parse_systemctl_show("ActiveEnterTimestamp=Sun 2026-11-29 20:11:29 UTC\n") == {
        "ActiveEnterTimestamp": "Sun 2026-11-29 20:11:29 UTC"
    }
    assert facts.parse_yes("yes\n") is True and facts.parse_yes("no\n") is False


def test_environment_versions_name_each_environment():
    listing = (
        "/opt/mlflow/envs/0123456789abcdef/lib/python3.11/site-packages/mlflow-3.17.2.dist-info\n"
        "/opt/mlflow/envs/fedcba9876543210/lib/python3.11/site-packages/mlflow-3.18.0.dist-info\n"
    )
    assert facts.parse_environment_versions(listing) == {
        "0123456789abcdef": "3.17.2",
        "fedcba9876543210": "3.18.0",
    }


def test_instances_record_what_each_process_was_started_with():
    text = (
        "mlflow-server@5001.service active 812 /opt/mlflow/envs/0123456789abcdef/bin/python 5a5a5a5a5a5a5a5a\n"
        "mlflow-server@5002.service failed 0 - -\n"
        "garbage line\n"
    )
    found = facts.parse_instances(text)
    assert found == {
        5001: facts.Instance(
            5001, "active", 812, "/opt/mlflow/envs/0123456789abcdef/bin/python", "5a5a5a5a5a5a5a5a"
        ),
        5002: facts.Instance(5002, "failed"),
    }
    assert found[5001].environment("/opt/mlflow/envs") == "0123456789abcdef"
    assert found[5002].environment("/opt/mlflow/envs") == ""
    assert (
        facts.Instance(5003, "active", 9, "/usr/bin/python3").environment("/opt/mlflow/envs") == ""
    )


def test_fact_commands_answer_absence_with_exit_0():
    # Every fact says "no" or prints nothing rather than failing, so Host.read can treat a
    # failing fact as a broken host.
    for fact in (
        facts.exists("/x"),
        facts.executable("/x"),
        facts.user_exists("mlflow"),
        facts.tcp_open("10.0.0.5", 5432),
    ):
        assert fact.command.endswith("&& echo yes || echo no")
    for fact in (
        facts.symlink_target("/x"),
        facts.file_text("/x"),
        facts.directory_listing("/x"),
        facts.certificate_names("/x"),
        facts.unit_enabled("nginx"),
        facts.unit_active("nginx"),
        facts.HEALTH_CODE,
        facts.installed_packages(("nginx",)),
        facts.environment_versions("/opt/mlflow/envs"),
        facts.env_file_value("/etc/mlflow/mlflow.env", "MLFLOW_KIT_CONFIG"),
    ):
        assert fact.command.endswith("|| true")
    for fact in (facts.INSTANCES, facts.APT_LOCK_HOLDERS):
        assert fact.command.endswith("; true")


def test_conda_build_is_exact():
    assert conda.build_script("/opt/mlflow/envs/0123abcd") == (
        "set -e; rm -rf /opt/mlflow/envs/0123abcd; "
        "PIP_COMPILE=0 /opt/miniforge/bin/conda env create --quiet --prefix "
        "/opt/mlflow/envs/0123abcd --file /etc/mlflow/environment.yml; "
        "/opt/mlflow/envs/0123abcd/bin/python -m compileall -q -j 0 "
        "/opt/mlflow/envs/0123abcd/lib/python3*/site-packages "
        "|| echo compileall: some files did not compile, left without .pyc as pip leaves them; "
        "touch /opt/mlflow/envs/0123abcd/.kit-complete"
    )
