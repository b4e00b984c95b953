"""Settings of a group: ``hosts`` instead of ``host``, its shared secrets, the drain timings."""

from __future__ import annotations

import pytest
import yaml

from provisioning.settings import Deployment, SettingsError, deployment_from_file
from provisioning.settings.group import group_host
from tests.unit.conftest import valid_settings

SHARED = {"flask_secret_key": "f" * 32, "kek_passphrase": "k" * 40}
BALANCER = "mlflow.example.com"
HOSTS = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


def write(tmp_path, **settings):
    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def file_settings(**changes):
    settings = valid_settings(**SHARED)
    del settings["host"]
    settings["hosts"] = HOSTS
    settings["public_host"] = BALANCER
    settings.update(changes)
    return settings


def test_a_settings_file_gives_hosts_instead_of_host(tmp_path):
    d = deployment_from_file(write(tmp_path, **file_settings()))
    assert d.hosts == tuple(HOSTS) and d.host == HOSTS[0]
    assert d.public_host == BALANCER and d.tracking_url == f"https://{BALANCER}"
    assert (d.drain_seconds, d.healthy_seconds) == (75, 30)
    one = group_host(d, HOSTS[2])
    assert one.host == HOSTS[2] and one.hosts == ()
    assert one.flask_secret_key == d.flask_secret_key
    assert one.public_host == BALANCER


def test_host_and_hosts_are_exclusive(tmp_path):
    with pytest.raises(SettingsError, match="one or the other") as raised:
        deployment_from_file(write(tmp_path, **file_settings(host=HOSTS[0])))
    assert raised.value.key == "host"


@pytest.mark.parametrize(
    "hosts, key, allowed",
    [
        (["10.0.0.2"], "hosts", "2-10 distinct hosts"),
        ([f"10.0.0.{i}" for i in range(2, 13)], "hosts", "2-10 distinct hosts"),
        (["10.0.0.2", "10.0.0.3", "10.0.0.2"], "hosts", "10.0.0.2 is listed twice"),
        (["10.0.0.2", "https://10.0.0.3"], "hosts[1]", "a DNS name or an IP address"),
        (["10.0.0.2", ""], "hosts[1]", "a non-empty string"),
        ("10.0.0.2", "hosts", "2-10 distinct hosts"),
    ],
)
def test_bad_hosts_are_named_with_what_is_allowed(tmp_path, hosts, key, allowed):
    with pytest.raises(SettingsError) as raised:
        deployment_from_file(write(tmp_path, **file_settings(hosts=hosts)))
    assert raised.value.key == key
    assert allowed in str(raised.value)


@pytest.mark.parametrize("missing", sorted(SHARED))
def test_a_group_without_its_shared_secrets_is_refused(tmp_path, missing):
    settings = file_settings()
    del settings[missing]
    with pytest.raises(SettingsError, match="must hold the same") as raised:
        deployment_from_file(write(tmp_path, **settings))
    assert raised.value.key == missing


def test_a_group_names_its_balancer(tmp_path):
    settings = file_settings()
    del settings["public_host"]
    with pytest.raises(SettingsError, match="the load balancer's name") as raised:
        deployment_from_file(write(tmp_path, **settings))
    assert raised.value.key == "public_host"


def test_a_single_host_needs_no_shared_secrets():
    assert Deployment(**valid_settings()).flask_secret_key is None


@pytest.mark.parametrize(
    "key, value", [("drain_seconds", -1), ("drain_seconds", 901), ("healthy_seconds", "30"),
                   ("healthy_seconds", 601), ("drain_seconds", True)],
)  # fmt: skip
def test_drain_timings_are_bounded(key, value):
    with pytest.raises(SettingsError, match="an integer from 0 to") as raised:
        Deployment(**valid_settings(**{key: value}))
    assert raised.value.key == key


def test_the_worked_on_host_is_one_of_the_group():
    with pytest.raises(SettingsError) as raised:
        Deployment(**valid_settings(hosts=HOSTS[1:], public_host=BALANCER, **SHARED))
    assert raised.value.key == "host"
