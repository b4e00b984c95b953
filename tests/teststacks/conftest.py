"""Fixtures for test stacks: the stand-in pulumi on PATH, moto on 127.0.0.1, no real clouds."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
import requests

from teststacks import standin_pulumi

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "recorded"
STANDIN = HERE / "standin_pulumi.py"
REPO = HERE.parent.parent


@pytest.fixture(autouse=True)
def no_real_clouds(monkeypatch, tmp_path):
    """Keep the user's own cloud credentials and settings out of every test."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_", "PULUMI_", "MLFLOW_KIT_")) or name in (
            "GITHUB_ACTOR",
            "GITLAB_USER_LOGIN",
            "BUILD_REQUESTEDFOR",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-gcp-credentials"))
    # Retries and listing lag are real waits in production; zero here.
    monkeypatch.setenv("MLFLOW_KIT_RETRY_BACKOFF", "0")
    monkeypatch.setenv("MLFLOW_KIT_SETTLE_SECONDS", "0")


class StandinPulumi:
    """The stand-in CLI's fake backend: seed stacks and failures, read back the calls."""

    def __init__(self, state_file: Path, bin_dir: Path):
        self.state_file, self.bin_dir = state_file, bin_dir
        self.save({"stacks": {}, "script": [], "calls": [], "current": None})

    def load(self) -> dict:
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state))

    def add_stack(self, name: str, config: dict[str, str], resources: int = 9, **extra) -> None:
        state = self.load()
        state["stacks"][name] = {
            "config": {
                (k if ":" in k else f"mlflow-server:{k}"): {"value": v, "secret": False}
                for k, v in config.items()
            },
            "resources": resources,
            "outputs": {},
            **extra,
        }
        self.save(state)

    def script(self, *entries: dict) -> None:
        state = self.load()
        state["script"].extend(entries)
        self.save(state)

    def calls(self) -> list[list[str]]:
        calls = [[a for a in call if a != "--non-interactive"] for call in self.load()["calls"]]
        # `pulumi version` is the kit's CLI check before anything else, not a command.
        return [call for call in calls if call != ["version"]]

    def commands(self) -> list[str]:
        """The first words of each call, e.g. ``destroy`` or ``stack rm``."""
        out = []
        for call in self.calls():
            words = standin_pulumi.positional(call)
            out.append(
                " ".join(words[:2])
                if words[:2]
                in (
                    ["stack", "ls"],
                    ["stack", "rm"],
                    ["stack", "init"],
                    ["stack", "select"],
                    ["stack", "output"],
                    ["stack", "export"],
                    ["config", "set"],
                    ["config", "set-all"],
                )
                else words[0]
            )
        return out

    def stacks(self) -> dict:
        return self.load()["stacks"]

    def env(self) -> dict[str, str]:
        """Environment for running ``fab`` in a subprocess against this stand-in."""
        return {
            **os.environ,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
            "STANDIN_PULUMI_STATE": str(self.state_file),
        }


@pytest.fixture
def pulumi_standin(tmp_path, monkeypatch) -> StandinPulumi:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pulumi"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    wrapper.chmod(0o755)
    standin = StandinPulumi(tmp_path / "standin-pulumi-state.json", bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_PULUMI_STATE", str(standin.state_file))
    return standin


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """A fresh moto account in us-east-1, reached through AWS_ENDPOINT_URL as boto3 does."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    return boto3.session.Session(region_name="us-east-1")
