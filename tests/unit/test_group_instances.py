"""``fab --stack`` with a group stack: its instances listed from the cloud's CLI (stand-ins in
tests/standin/cloud_cli.py), each reached through its own tunnel with the stack's pinned
host key and shared secrets, and rolled over in a stable order; not-ready instances, an
empty group and a failing CLI stop everything before any host is touched."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from provisioning import group_instances, server_tasks, session
from provisioning.group_instances import Completed
from provisioning.play import Play, unchanged
from provisioning.settings.group import group_host
from provisioning.transport import Host
from tests.standin.cloud_cli import COMPUTE, Aws, Gcloud, asg, asg_instance, managed_instance
from tests.unit.double import ScriptedConnection
from tests.unit.test_rolling import FLAG

FIXTURES = Path(__file__).parent.parent / "fixtures"
PROJECT, REGION, MIG = "my-project-id", "europe-west1", "mlflow-group-manager-a1b2c3d"
AWS_REGION, ASG = "eu-west-1", "group-asg-abc1234"
FLASK, KEK = "F" * 24 + "flask-secret", "K" * 32 + "kek-passphrase"


def group_outputs(cloud: str, size: int = 3) -> dict:
    outputs = json.loads((FIXTURES / f"stack-output-{cloud}.json").read_text())
    group = (
        f"{COMPUTE}/projects/{PROJECT}/regions/{REGION}/instanceGroupManagers/{MIG}"
        if cloud == "gcp"
        else ASG
    )
    region = REGION if cloud == "gcp" else AWS_REGION
    outputs.update(
        topology="group",
        host="mlflow.example.com",
        tracking_url="https://mlflow.example.com",
        url="https://mlflow.example.com",
        lb_address="198.51.100.20",
        region=region,
        vm_id=group.rsplit("/", 1)[-1],
        vm_zone=region,
        hosts=[{"group": group, "region": region, "size": size, "instances": []}],
        flask_secret_key=FLASK,
        kek_passphrase=KEK,
    )
    if cloud == "gcp":
        # A group's default tier, db-custom-1-3840 (shared-core tiers are refused in one).
        outputs["db_max_connections"] = 100
    return outputs


def gcloud(*instances) -> Gcloud:
    return Gcloud({(PROJECT, REGION, MIG): list(instances)})


def aws(*instances, desired: int = 3) -> Aws:
    return Aws({(AWS_REGION, ASG): asg(ASG, AWS_REGION, list(instances), desired)})


GCP_READY = [
    managed_instance(PROJECT, "europe-west1-d", "mlflow-group-x9k2"),
    managed_instance(PROJECT, "europe-west1-b", "mlflow-group-a1c4"),
    managed_instance(PROJECT, "europe-west1-c", "mlflow-group-m0q7"),
]
AWS_READY = [
    asg_instance("i-0f1e2d3c4b5a69788", "eu-west-1b"),
    asg_instance("i-0a1b2c3d4e5f67890", "eu-west-1a"),
    asg_instance("i-05b4f7d5be44822a6", "eu-west-1a"),
]


@pytest.fixture
def stack(monkeypatch):
    """``stack(cloud, runner)``: the stack's outputs from ``pulumi stack output`` and the
    cloud's CLI answering through ``runner``."""

    def use(cloud: str, runner, size: int = 3) -> dict:
        outputs = group_outputs(cloud, size)
        monkeypatch.setattr(session.pulumi_cli, "stack_outputs", lambda name: outputs)
        monkeypatch.setattr(group_instances, "RUNNER", runner)
        return outputs

    return use


def test_a_gcp_group_is_listed_sorted_and_each_instance_gets_its_iap_tunnel(stack):
    outputs = stack("gcp", runner := gcloud(*GCP_READY))
    d = session.load_deployment(object(), "prod", None)
    assert runner.calls == [
        ["gcloud", "compute", "instance-groups", "managed", "list-instances", MIG,
         "--region", REGION, "--project", PROJECT, "--format=json"],
    ]  # fmt: skip
    assert d.hosts == ("mlflow-group-a1c4", "mlflow-group-m0q7", "mlflow-group-x9k2")
    assert d.host_proxy_commands["mlflow-group-m0q7"] == (
        "gcloud compute start-iap-tunnel mlflow-group-m0q7 22 --listen-on-stdin"
        f" --zone europe-west1-c --project {PROJECT}"
    )
    # Not the group's name as if it were a VM.
    assert d.ssh_proxy_command is None
    assert d.ssh_host_key == outputs["ssh_host_key"]
    assert d.public_host == "mlflow.example.com"
    assert (d.flask_secret_key.reveal(), d.kek_passphrase.reveal()) == (FLASK, KEK)
    assert d.admin_password.reveal() == outputs["admin_password"]


def test_an_aws_group_is_listed_and_each_instance_gets_its_session_manager_tunnel(stack):
    stack("aws", runner := aws(*AWS_READY))
    d = session.load_deployment(object(), "prod", None)
    assert runner.calls == [
        ["aws", "autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names",
         ASG, "--region", AWS_REGION, "--output", "json"],
    ]  # fmt: skip
    assert d.hosts == tuple(sorted(i["InstanceId"] for i in AWS_READY))
    assert d.host_proxy_commands["i-0a1b2c3d4e5f67890"] == (
        "aws ssm start-session --target i-0a1b2c3d4e5f67890 --document-name "
        f"AWS-StartSSHSession --parameters portNumber=22 --region {AWS_REGION}"
    )


class Hosts:
    """One scripted connection per instance: a converged bootstrap on each."""

    def __init__(self, names):
        self.conns = {
            n: ScriptedConnection(
                [
                    {"run": "$ read state"},
                    {"run": f"# test -e {FLAG} && echo yes || echo no", "stdout": "no\n"},
                ],
                host=n,
            )
            for n in names
        }
        self.opened: list[tuple[str, str | None, str | None]] = []

    @contextmanager
    def on_host(self, d, task, accept_new_host_key=False):
        self.opened.append((d.host, d.ssh_proxy_command, d.ssh_host_key))
        yield Play(Host(self.conns[d.host]), out=print)


def converge(play, d, selection=""):
    play.step(
        "mlflow servers",
        lambda host: unchanged(host.run("read state", sudo=False).stdout or "as wanted"),
    )


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_bootstrap_rolls_over_the_listed_instances_in_order_through_their_tunnels(
    stack, monkeypatch, capsys, cloud
):
    runner = gcloud(*GCP_READY) if cloud == "gcp" else aws(*AWS_READY)
    outputs = stack(cloud, runner)
    names = sorted(
        [i["name"] for i in GCP_READY] if cloud == "gcp" else [i["InstanceId"] for i in AWS_READY]
    )
    hosts = Hosts(names)
    monkeypatch.setattr(server_tasks, "on_host", hosts.on_host)
    monkeypatch.setattr(server_tasks.plays, "bootstrap", converge)
    server_tasks.bootstrap.body(object(), stack="prod")
    assert [host for host, _, _ in hosts.opened] == names
    for host, proxy, key in hosts.opened:
        assert proxy.split()[:4] in (
            ["gcloud", "compute", "start-iap-tunnel", host],
            ["aws", "ssm", "start-session", "--target"],
        )
        assert host in proxy.split() and key == outputs["ssh_host_key"]
    for conn in hosts.conns.values():
        conn.assert_done()
    printed = capsys.readouterr().out
    assert "rolling bootstrap of 3 hosts finished" in printed
    assert "group: 3 instances ready, each reached through" in printed
    # No secret of the stack on any command line run, or in anything printed.
    secrets = [FLASK, KEK, outputs["admin_password"], outputs["backend_store_uri"]]
    commands = [" ".join(c) for c in runner.calls] + [p for _, p, _ in hosts.opened]
    commands += [c for conn in hosts.conns.values() for c in conn.ran]
    for secret in secrets:
        assert secret not in printed
        assert not any(secret in line for line in commands)


@pytest.mark.parametrize(
    "cloud, waiting, shown",
    [
        (
            "gcp",
            managed_instance(PROJECT, "europe-west1-b", "mlflow-group-new1", None, "CREATING"),
            "mlflow-group-new1 in europe-west1-b: NOT CREATED/CREATING",
        ),
        (
            "gcp",
            managed_instance(
                PROJECT, "europe-west1-c", "mlflow-group-m0q7", "STAGING", "RECREATING"
            ),
            "mlflow-group-m0q7 in europe-west1-c: STAGING/RECREATING",
        ),
        (
            # Running, but the group is still checking it (ManagedInstance: VERIFYING).
            "gcp",
            managed_instance(
                PROJECT, "europe-west1-d", "mlflow-group-x9k2", "RUNNING", "VERIFYING"
            ),
            "mlflow-group-x9k2 in europe-west1-d: RUNNING/VERIFYING",
        ),
        (
            "aws",
            asg_instance("i-0123456789abcdef0", "eu-west-1b", "Pending", "Healthy"),
            "i-0123456789abcdef0 in eu-west-1b: Pending/Healthy",
        ),
        (
            "aws",
            asg_instance("i-0123456789abcdef0", "eu-west-1b", "InService", "Unhealthy"),
            "i-0123456789abcdef0 in eu-west-1b: InService/Unhealthy",
        ),
    ],
)
def test_an_instance_not_ready_stops_the_task_before_any_host_is_touched(
    stack, monkeypatch, cloud, waiting, shown
):
    if cloud == "gcp":
        others = [i for i in GCP_READY[:2] if i["name"] != waiting["name"]]
        runner = gcloud(*others, waiting)
    else:
        runner = aws(*AWS_READY[:2], waiting)
    stack(cloud, runner)
    monkeypatch.setattr(server_tasks, "on_host", None)  # never reached
    with pytest.raises(Exit) as stopped:
        server_tasks.bootstrap.body(object(), stack="prod")
    message = str(stopped.value)
    assert shown in message and "Nothing was touched" in message
    assert "run this again" in message and stopped.value.code == 2
    if cloud == "gcp":
        assert f"wait-until {MIG} --stable --region {REGION}" in message


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_an_empty_group_is_refused(stack, cloud):
    stack(cloud, gcloud() if cloud == "gcp" else aws(desired=0))
    with pytest.raises(Exit, match="has no instances") as refused:
        session.load_deployment(object(), "prod", None)
    assert "run this again" in str(refused.value)


def test_fewer_instances_than_the_group_keeps_is_refused(stack):
    stack("aws", aws(*AWS_READY[:2]), size=3)
    with pytest.raises(Exit, match="keeps 3 instances but") as refused:
        session.load_deployment(object(), "prod", None)
    assert "lists 2" in str(refused.value)


def test_a_single_instance_group_cannot_roll(stack):
    stack("gcp", gcloud(GCP_READY[0]), size=1)
    with pytest.raises(Exit, match=r"1 ready instance\(s\); a rolling bootstrap needs 2-10"):
        session.load_deployment(object(), "prod", None)


def test_an_aws_group_the_account_does_not_have_is_named(stack, monkeypatch):
    stack("aws", Aws({}))
    with pytest.raises(Exit, match=f"found no Auto Scaling group {ASG} in {AWS_REGION}"):
        session.load_deployment(object(), "prod", None)


@pytest.mark.parametrize(
    "answer, expected",
    [
        (
            Completed(1, "", "ERROR: (gcloud.compute.instance-groups.managed.list-instances) "
                      "You do not currently have an active account selected.\n"),
            "exited 1:\nERROR: (gcloud.compute.instance-groups.managed.list-instances) You do "
            "not currently have an active account selected.",
        ),
        (None, "exited 127:\ngcloud: command not found"),
    ],
)  # fmt: skip
def test_a_cli_failure_names_the_command_its_exit_code_and_stderr(
    stack, monkeypatch, tmp_path, answer, expected
):
    # None: the real runner, with no gcloud on PATH.
    stack("gcp", (lambda argv: answer) if answer else group_instances.run_cli)
    if answer is None:
        monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Exit) as failed:
        session.load_deployment(object(), "prod", None)
    message = str(failed.value)
    assert f"`gcloud compute instance-groups managed list-instances {MIG}" in message
    assert expected in message
    assert "gcloud auth login" in message and failed.value.code == 2


def test_the_stand_ins_refuse_options_the_real_clis_do_not_take():
    g = gcloud(*GCP_READY)
    base = ["gcloud", *["compute", "instance-groups", "managed", "list-instances"], MIG]
    assert g([*base, "--region", REGION, "--zone", "europe-west1-b"]).returncode == 2
    assert "unrecognized arguments: --regions" in g([*base, "--regions", REGION]).stderr
    # Without --format=json the real command prints a table, which is no JSON.
    assert not g([*base, "--region", REGION, "--project", PROJECT]).stdout.startswith("[")
    a = aws(*AWS_READY)
    asg_base = ["aws", "autoscaling", "describe-auto-scaling-groups"]
    bad = a([*asg_base, "--auto-scaling-group-name", ASG, "--region", AWS_REGION])
    assert bad.returncode == 252 and "Unknown options: --auto-scaling-group-name" in bad.stderr
    good = a([*asg_base, "--auto-scaling-group-names", ASG, "--region", AWS_REGION])
    assert json.loads(good.stdout)["AutoScalingGroups"][0]["AutoScalingGroupName"] == ASG


def test_fab_h_with_a_group_stack_is_that_instance_alone_through_its_tunnel(stack):
    stack("gcp", gcloud(*GCP_READY))

    class Context:
        host = original_host = "mlflow-group-m0q7"
        user, port = "mlflow-admin", None

    one = session.load_deployment(Context(), "prod", None)
    assert one.hosts == () and one.host == "mlflow-group-m0q7"
    assert "--zone europe-west1-c" in one.ssh_proxy_command
    assert one.host_proxy_commands == {}


def test_hosts_from_a_settings_file_are_not_listed_again(stack, tmp_path):
    stack("gcp", runner := gcloud(*GCP_READY))
    path = tmp_path / "group.yaml"
    path.write_text("hosts: [10.0.0.2, 10.0.0.3]\nssh_proxy_command: ssh -W %h:%p bastion\n")
    d = session.load_deployment(object(), "prod", str(path))
    assert d.hosts == ("10.0.0.2", "10.0.0.3") and runner.calls == []
    assert d.ssh_proxy_command == "ssh -W %h:%p bastion"


def test_single_topology_stacks_are_not_listed(stack, monkeypatch):
    outputs = json.loads((FIXTURES / "stack-output-gcp.json").read_text())
    monkeypatch.setattr(session.pulumi_cli, "stack_outputs", lambda name: outputs)
    monkeypatch.setattr(group_instances, "RUNNER", None)  # never called
    d = session.load_deployment(object(), "dev", None)
    assert d.hosts == () and d.host == outputs["host"]
    assert d.ssh_proxy_command.startswith("gcloud compute start-iap-tunnel mlflow-vm-instance")


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"host_proxy_commands": {"10.0.0.9": "ssh -W %h:%p b"}}, "host_proxy_commands['10.0.0.9']"),
        ({"host_proxy_commands": {"10.0.0.3": "a\nb"}}, "host_proxy_commands['10.0.0.3']"),
        ({"hosts": [], "host": "10.0.0.2", "host_proxy_commands": {"10.0.0.2": "x"}},
         "host_proxy_commands"),
    ],
)  # fmt: skip
def test_a_proxy_command_for_a_host_outside_the_group_is_refused(tmp_path, changes, key):
    import yaml

    from provisioning.settings import SettingsError, deployment_from_file
    from tests.unit.test_group_settings import file_settings

    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(file_settings(**changes)))
    with pytest.raises(SettingsError) as refused:
        deployment_from_file(path)
    assert refused.value.key == key


def test_an_operators_proxy_command_wins_over_the_listed_tunnels(stack, tmp_path):
    stack("gcp", gcloud(*GCP_READY))
    path = tmp_path / "access.yaml"
    path.write_text(
        "ssh_proxy_command: ssh -W %h:%p bastion\n"
        "host_proxy_commands: {mlflow-group-x9k2: ssh -W x9k2:22 other}\n"
    )
    d = session.load_deployment(object(), "prod", str(path))
    assert d.hosts == ("mlflow-group-a1c4", "mlflow-group-m0q7", "mlflow-group-x9k2")
    assert group_host(d, "mlflow-group-a1c4").ssh_proxy_command == "ssh -W %h:%p bastion"
    assert group_host(d, "mlflow-group-x9k2").ssh_proxy_command == "ssh -W x9k2:22 other"
