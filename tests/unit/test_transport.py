"""The transport, reporting and file convergence, each on its own."""

from __future__ import annotations

import pytest

from provisioning import files, play
from provisioning.transport import Host, RemoteError
from tests.unit.double import ScriptedConnection, UnexpectedCommand, prompt_form


def test_prompt_form_shows_who_runs_what():
    assert prompt_form("sudo -n sh -c 'systemctl restart x'") == "# systemctl restart x"
    assert prompt_form("sudo -n -u mlflow sh -c 'id'") == "mlflow$ id"
    assert prompt_form("sudo -n true 2>/dev/null && echo yes || echo no").startswith("$ sudo -n")


def test_the_double_refuses_an_unscripted_command():
    host = Host(ScriptedConnection([{"run": "$ true"}]))
    host.run("true", sudo=False)
    with pytest.raises(UnexpectedCommand, match="unscripted run"):
        host.run("rm -rf /", sudo=False)


def test_the_double_refuses_a_command_out_of_order():
    host = Host(ScriptedConnection([{"run": "# a"}, {"run": "# b"}]))
    with pytest.raises(UnexpectedCommand, match="expected run '# a'"):
        host.run("b")


def test_a_failed_command_names_host_step_command_exit_and_stderr_tail():
    conn = ScriptedConnection(
        [{"run": "# apt-get update", "exit": 100, "stderr": "E: Could not get lock\n"}]
    )
    host = Host(conn, step="system packages")
    with pytest.raises(RemoteError) as error:
        host.run("apt-get update")
    assert str(error.value) == (
        "[203.0.113.10] step 'system packages' failed: `apt-get update` exited 100\n"
        "E: Could not get lock"
    )


def test_changed_secret_file_is_uploaded_over_sftp_and_installed_0600():
    secret = 'MLFLOW_AUTH_ADMIN_PASSWORD="s3cret-value"\n'
    conn = ScriptedConnection(
        [
            {"run": "# if [ -e /etc/mlflow/mlflow.env ]; then stat -c '%a %U %G' /etc/mlflow/mlflow.env"
             " && sha256sum /etc/mlflow/mlflow.env; else echo missing; fi", "stdout": "missing\n"},
            {"run": "$ mktemp -d", "stdout": "/tmp/tmp.y\n"},
            {"put": "/tmp/tmp.y/upload"},
            {"run": "# install -D -m 0600 -o mlflow -g mlflow /tmp/tmp.y/upload"
             " /etc/mlflow/mlflow.env.kit-new && mv -f /etc/mlflow/mlflow.env.kit-new /etc/mlflow/mlflow.env"},
            {"run": "$ rm -rf /tmp/tmp.y"},
        ]
    )  # fmt: skip
    changed = files.ensure_file(
        Host(conn), "/etc/mlflow/mlflow.env", secret, mode="0600", owner="mlflow", group="mlflow"
    )
    assert changed is True
    assert conn.uploads == {"/tmp/tmp.y/upload": secret.encode()}
    assert not any("s3cret-value" in command for command in conn.ran)
    conn.assert_done()


def test_an_outcome_that_changed_nothing_says_why():
    with pytest.raises(ValueError, match="must say why"):
        play.unchanged("")
    assert play.changed().changed is True


def test_play_reports_each_step_and_counts_changes():
    lines: list[str] = []
    runner = play.Play(Host(ScriptedConnection([])), out=lines.append)
    assert runner.step("first", lambda _host: play.unchanged("as wanted", 7)) == 7
    runner.step("second", lambda _host: play.changed("did it"))
    assert runner.changes == 1
    assert lines[0].startswith("[203.0.113.10] first") and lines[0].endswith("- as wanted")
    assert " changed " in lines[1] and lines[1].endswith("- did it")
    with pytest.raises(TypeError, match="not an Outcome"):
        runner.step("third", lambda _host: True)


def test_a_commands_input_reaches_it_in_one_read():
    """invoke copies a command's input one read per 10 ms and asks a stream that is not a
    terminal for one character each time: a database URI on stdin cost 3 s per command."""
    from invoke import Context

    from provisioning.transport import WholeReads

    class Counted(WholeReads):
        reads_with_data = 0

        def read(self, size=-1):
            data = super().read(size)
            Counted.reads_with_data += bool(data)
            return data

    given = '{"uri": "postgresql+psycopg2://mlflow:secret@10.0.0.5:5432/mlflow"}' * 20
    result = Context().run("cat", in_stream=Counted(given), hide=True, pty=False)
    assert result.stdout == given
    assert Counted.reads_with_data == 1  # a plain StringIO: one per character
