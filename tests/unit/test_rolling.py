"""The rolling bootstrap over a group: the order on each host (drain, bootstrap, health,
un-drain, rejoin), no drain where nothing changes, and a failure that stops the roll.

Each host is a real Host on a strict scripted connection; the bootstrap is a stand-in
play that restarts a server (or only reads, when converged), so the drain the
transport triggers and the steps around it are the production code.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from provisioning import facts, rolling
from provisioning.layout import PATHS
from provisioning.play import Play, changed, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host, RemoteError
from tests.unit.double import ScriptedConnection
from tests.unit.test_step_cases import BASE

HOSTS = ("10.0.0.2", "10.0.0.3", "10.0.0.4")
SEEN_BY_BALANCER = f"$ {facts.BALANCER_HEALTH_CODE.command}"
FLAG = PATHS["drain_flag"]
RESTART = "systemctl restart mlflow-server@5001"


def group(**changes) -> Deployment:
    settings = dict(BASE, host=HOSTS[0], hosts=HOSTS, flask_secret_key="f" * 32)
    settings.update(public_host="mlflow.example.com")
    settings.update(kek_passphrase="k" * 40, drain_seconds=75, healthy_seconds=30, **changes)
    return Deployment(**settings)


def drain_and_restart(flag_was_there: bool = False) -> list[dict]:
    return [
        {"run": SEEN_BY_BALANCER, "stdout": "200"},
        {"run": f"$ {facts.age_seconds(FLAG).command}", "stdout": "none\n"},
        {"run": f"# touch {FLAG}"},
        {"run": SEEN_BY_BALANCER, "stdout": "503"},
        {"run": f"# {RESTART}"},
        {"run": "$ health gate"},
        {"run": f"# test -e {FLAG} && echo yes || echo no", "stdout": "yes\n"},
        {"run": f"# rm -f {FLAG}"},
        {"run": SEEN_BY_BALANCER, "stdout": "200"},
    ]


def converged(flag: bool = False) -> list[dict]:
    steps = [
        {"run": "$ read state"},
        {"run": "$ health gate"},
        {"run": f"# test -e {FLAG} && echo yes || echo no", "stdout": "yes\n" if flag else "no\n"},
    ]
    if flag:
        steps += [{"run": f"# rm -f {FLAG}"}, {"run": SEEN_BY_BALANCER, "stdout": "200"}]
    return steps


class Group:
    """One scripted connection per host; records the order plays opened and what ran."""

    def __init__(self, transcripts: dict[str, list[dict]]):
        self.conns = {h: ScriptedConnection(t, host=h) for h, t in transcripts.items()}
        self.opened: list[str] = []
        self.lines: list[str] = []
        self.plays: list[Play] = []

    @contextmanager
    def open_play(self, deployment: Deployment):
        self.opened.append(deployment.host)
        play = Play(Host(self.conns[deployment.host]), out=self.lines.append)
        self.plays.append(play)
        yield play


def bootstrap_stand_in(fail_on: str = ""):
    def converge(play: Play, d: Deployment) -> None:
        assert d.hosts == () and d.host in HOSTS

        def servers(host: Host):
            if host.name == fail_on:
                host.run(RESTART)
                raise host.error(RESTART, 1, "Job for mlflow-server@5001.service failed.")
            if host.conn._pending[0]["run"] == "$ read state":
                host.run("read state", sudo=False)
                return unchanged("as wanted")
            host.run(RESTART)
            return changed("restarted 5001")

        play.step("mlflow servers", servers)
        play.step(
            "health gate",
            lambda host: unchanged(host.run("health gate", sudo=False).stdout or "ok"),
        )

    return converge


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


def test_each_host_in_turn_is_drained_bootstrapped_proven_undrained_and_rejoins(no_waiting):
    hosts = Group({h: drain_and_restart() for h in HOSTS})
    results = rolling.roll(group(), hosts.open_play, bootstrap_stand_in(), out=hosts.lines.append)
    assert hosts.opened == list(HOSTS)
    for conn in hosts.conns.values():
        conn.assert_done()
    # Per host: the drain's wait before the restart, the rejoin's wait after.
    assert no_waiting == [75, 30] * 3
    for play in hosts.plays:
        assert [(r.name, r.changed) for r in play.reports] == [
            ("drain", True), ("mlflow servers", True), ("health gate", False),
            ("un-drain", True), ("rejoin", False),
        ]  # fmt: skip
    # Progress names the host, and each host's time.
    assert f"[{HOSTS[1]}] host 2 of 3: bootstrap" in hosts.lines
    assert any(line.startswith(f"[{HOSTS[2]}] bootstrap done in") for line in hosts.lines)
    assert [(r.host, r.changes, r.drained) for r in results] == [(h, 1, True) for h in HOSTS]
    # The drain belongs to the roll: nothing after it drains these hosts.
    assert all(play.host.before_disruption is None for play in hosts.plays)


def test_converged_hosts_are_not_drained_and_a_left_drained_one_is_taken_back(no_waiting):
    hosts = Group({HOSTS[0]: converged(), HOSTS[1]: converged(flag=True), HOSTS[2]: converged()})
    results = rolling.roll(group(), hosts.open_play, bootstrap_stand_in(), out=hosts.lines.append)
    for conn in hosts.conns.values():
        conn.assert_done()
    assert [(r.changes, r.drained) for r in results] == [(0, False), (0, True), (0, False)]
    assert not any("touch" in c for conn in hosts.conns.values() for c in conn.ran)
    assert no_waiting == [30]
    assert all(play.host.before_disruption is None for play in hosts.plays)
    assert "0 changed, drained: 10.0.0.3" in rolling.summary(results, 1.0)


def test_a_failure_on_host_two_stops_the_roll_leaves_it_drained_and_host_three_untouched():
    transcripts = {
        HOSTS[0]: drain_and_restart(),
        HOSTS[1]: drain_and_restart()[:5],
        HOSTS[2]: [],
    }
    hosts = Group(transcripts)
    with pytest.raises(rolling.RollStopped) as stopped:
        rolling.roll(group(), hosts.open_play, bootstrap_stand_in(fail_on=HOSTS[1]))
    assert hosts.opened == list(HOSTS[:2])
    assert hosts.conns[HOSTS[2]].ran == []
    assert not any(c.startswith("# rm -f") for c in hosts.conns[HOSTS[1]].ran)
    message = str(stopped.value)
    assert isinstance(stopped.value.__cause__, RemoteError)
    for text in (
        f"stopped at {HOSTS[1]} (host 2 of 3)",
        "step 'mlflow servers' failed",
        f"`{RESTART}` exited 1",
        "Job for mlflow-server@5001.service failed.",
        f"{HOSTS[1]} is left drained",
        f"done: {HOSTS[0]}",
        f"not touched, still serving: {HOSTS[2]}",
        "run the same command again",
    ):
        assert text in message, text


def test_a_failure_before_anything_restarted_says_the_host_was_not_drained():
    hosts = Group({HOSTS[0]: [], HOSTS[1]: [], HOSTS[2]: []})

    def preflight_fails(play: Play, d: Deployment) -> None:
        raise play.host.error("df", 1, "no room")

    with pytest.raises(rolling.RollStopped, match=f"{HOSTS[0]} was not drained") as stopped:
        rolling.roll(group(), hosts.open_play, preflight_fails)
    assert hosts.opened == [HOSTS[0]]
    assert f"not touched, still serving: {HOSTS[1]}, {HOSTS[2]}" in str(stopped.value)


@pytest.mark.parametrize(
    "command, interrupts",
    [
        ("systemctl restart mlflow-server@5001", True),
        ("systemctl start mlflow-server@5999", True),
        ("systemctl stop mlflow-server@5001 mlflow-server@5002", True),
        ("systemctl disable --now mlflow-server@5003", True),
        ("nginx -t -q && systemctl reload nginx", True),
        ("systemctl start nginx", True),
        ("nginx -t -q && systemctl enable nginx && systemctl reload-or-restart nginx", True),
        ("systemctl enable nginx", False),
        ("systemctl daemon-reload", False),
        ("systemctl reset-failed mlflow-server@5001 2>/dev/null || true", False),
        ("systemctl restart mlflow-gc.timer", False),
        ("systemctl enable mlflow-server@5001", False),
        ("nginx -t -q", False),
    ],
)
def test_what_interrupts_serving_drains_first(command, interrupts):
    called: list[str] = []
    host = Host(ScriptedConnection([{"run": f"# {command}"}]))
    host.before_disruption = lambda: called.append("drain")
    host.run(command)
    assert called == (["drain"] if interrupts else [])
    # Once only, and never again on this host.
    assert host.before_disruption is (None if interrupts else host.before_disruption)


class ReadingHost:
    """A host whose facts answer from a table by command (status only reads)."""

    name = HOSTS[0]

    def __init__(self, answers: dict[str, object]):
        self.answers = answers

    def read(self, fact):
        for command, value in self.answers.items():
            if command in fact.command:
                return value
        return fact.parse("")


@pytest.mark.parametrize("flag", [True, False])
def test_status_says_whether_the_host_is_draining(flag):
    from provisioning import plays

    host = ReadingHost({f"test -e {FLAG}": flag, "https://127.0.0.1/health": "200"})
    rows = dict(plays.status(host, group()))
    assert rows["draining"].startswith("YES: /health answers 503") is flag
    assert rows["draining"] == "no" or flag


@pytest.mark.parametrize(
    ("logged", "shown"),
    [
        ("listening for user changes on mlflow_kit_users", "heard at once (listening to the database)"),
        ("user changes unheard, admin checks query the database meanwhile: RuntimeError: no "
         "trigger mlflow_kit_user_changed on the users table (mlflow-migrate installs it)",
         "UNHEARD (RuntimeError: no trigger mlflow_kit_user_changed on the users table "
         "(mlflow-migrate installs it)): admin checks query the database, and a changed "
         "password opens this instance for up to 60 s more"),
        ("", "not listening yet"),
    ],
    ids=["listening", "unheard", "silent"],
)  # fmt: skip
def test_status_says_whether_each_instance_hears_user_changes(logged, shown):
    from provisioning import plays
    from provisioning.facts.server import Instance

    instances = {5001: Instance(5001, "active"), 5002: Instance(5002, "failed")}
    host = ReadingHost({"'mlflow-server@*'": instances, "_SYSTEMD_INVOCATION_ID": logged})
    rows = dict(plays.status(host, group()))
    assert rows["user changes 5001"] == shown
    assert "user changes 5002" not in rows  # not running: nothing to hear with
    # MLflow's own auth app (job execution on) has no listener to ask about.
    assert "user changes 5001" not in dict(plays.status(host, group(job_execution=True)))


def test_status_of_a_group_has_one_section_per_host(monkeypatch, capsys):
    from provisioning import server_tasks

    monkeypatch.setattr(server_tasks, "load_deployment", lambda c, stack, settings: group())
    opened = []

    @contextmanager
    def on_host(deployment, task, lock=True):
        opened.append((deployment.host, deployment.hosts, lock))
        yield type("P", (), {"host": deployment.host})()

    monkeypatch.setattr(server_tasks, "on_host", on_host)
    monkeypatch.setattr(server_tasks.plays, "status", lambda host, d: [("draining", "no")])
    server_tasks.status.body(None, settings="group.yaml")
    assert opened == [(h, (), False) for h in HOSTS]
    out = capsys.readouterr().out
    assert out.split("\n")[::2][:3] == list(HOSTS)
