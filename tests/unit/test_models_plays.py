"""Model endpoint plays: the order of their steps, what fab models shows, the sizing rule."""

from __future__ import annotations

import json

import pytest

from provisioning import facts, plays, sizing
from provisioning.layout import PATHS
from provisioning.render import model_context
from provisioning.settings import Deployment
from provisioning.steps import models
from provisioning.transport import Host, PreflightError
from tests.unit.double import ScriptedConnection
from tests.unit.test_plays import RecordingPlay
from tests.unit.test_step_cases import BASE


def test_serve_model_refuses_before_it_changes_anything_and_proves_the_endpoint_last():
    recording = RecordingPlay({"model version": "3", "desired endpoints": ""})
    request = models.Request("demo-classifier", alias="champion", follow=True)
    plays.serve_model(recording, Deployment(**BASE), request)
    assert [name for name, _f, _a in recording.steps] == [
        "preflight",
        "room for the endpoint",
        "model endpoint files",
        "model version",
        "desired endpoints",
        "model endpoints",
        "endpoint check",
    ]
    assert recording.args("model endpoint files") == (model_context(Deployment(**BASE)),)
    assert recording.args("model version") == ("demo-classifier", "", "champion")
    assert recording.args("desired endpoints")[1:] == ("demo-classifier", "3", "champion", True)
    # What the file held before goes to the run, which puts it back if it fails.
    assert recording.args("model endpoints") == ("",)


def test_unserve_model_withdraws_then_runs_the_program():
    recording = RecordingPlay({"desired endpoints": "{}"})
    plays.unserve_model(recording, Deployment(**BASE), "demo-classifier")
    assert [name for name, _f, _a in recording.steps] == [
        "model endpoint files",
        "desired endpoints",
        "model endpoints",
    ]
    assert recording.args("model endpoints") == ("{}",)


def endpoint(name="demo-classifier", workers=1, memory=512, **changes) -> models.Endpoint:
    return models.Endpoint(
        name, changes.pop("version", "3"), workers=workers, memory_mb=memory, **changes
    )


@pytest.mark.parametrize(
    ("memory_mb", "servers", "endpoints", "fits"),
    [
        (4096, 2, [(1, 512)], True),  # t3.medium: 1672 MB for models
        (4096, 2, [(1, 512), (1, 512)], True),  # 1024 + 512 to switch
        (4096, 2, [(1, 512), (1, 512), (1, 512)], False),  # 1536 + 512 > 1672
        (2048, 1, [(1, 512)], False),  # e2-small: 274 MB
        (8192, 2, [(2, 768), (1, 512)], True),  # 1536 + 512 + 1536 = 3584 <= 5768
    ],
)
def test_endpoints_fit_beside_the_tracking_servers_with_room_to_switch(
    memory_mb, servers, endpoints, fits
):
    room = sizing.model_room_mb(memory_mb, servers)
    assert (sizing.models_need_mb(endpoints) <= room) is fits
    wanted = [endpoint(f"m{i}", w, m) for i, (w, m) in enumerate(endpoints)]
    message = models.room_message("h", facts.Resources(2, memory_mb, 20000), servers, wanted)
    assert (message is None) is fits
    if message:
        need = sizing.models_need_mb(endpoints)
        assert f"they need {need} MB" in message and f"has {max(room, 0)} MB" in message
        assert "model_memory_mb" in message and "Nothing was changed" in message


def test_sizes_come_from_the_settings_per_model_or_the_defaults():
    deployment = Deployment(
        **BASE,
        model_workers=2,
        model_memory_mb=640,
        model_endpoints={"big": {"memory_mb": 2048}, "wide": {"workers": 4}},
    )
    assert models.sizes_for(deployment, "other") == (2, 640)
    assert models.sizes_for(deployment, "big") == (2, 2048)
    assert models.sizes_for(deployment, "wide") == (4, 640)
    resized = models.resized(deployment, [endpoint("big", 1, 512), endpoint("other", 1, 512)])
    assert [(e.workers, e.memory_mb) for e in resized] == [(2, 2048), (2, 640)]


def test_models_json_is_the_same_bytes_for_the_same_endpoints():
    a = [endpoint("b", alias="champion", follow=True), endpoint("a")]
    text = models.desired_text(a)
    assert text == models.desired_text(list(reversed(a)))
    assert models.parse_desired(text) == sorted(a, key=lambda e: e.name)
    assert [e["name"] for e in json.loads(text)["endpoints"]] == ["a", "b"]
    assert models.parse_desired("") == []


def test_endpoints_say_what_was_asked():
    assert endpoint(alias="champion", follow=True).asked == "@champion (following)"
    assert endpoint(alias="champion").asked == "@champion"
    assert endpoint().asked == "version 3"


def status_host(desired: str, instances: str, upstreams: str, last: str) -> Host:
    transcript = [
        {"run": f"# {facts.file_text(PATHS['models_desired']).command}", "stdout": desired},
        {"run": f"# {facts.MODEL_INSTANCES.command}", "stdout": instances},
        {
            "run": f"# {facts.model_upstreams(PATHS['nginx_models_dir']).command}",
            "stdout": upstreams,
        },
        {"run": f"# {facts.model_last_requests(PATHS['nginx_log_dir']).command}", "stdout": last},
    ]
    return Host(ScriptedConnection(transcript))


def test_fab_models_shows_what_each_endpoint_runs_and_serves():
    desired = models.desired_text(
        [
            endpoint("demo-classifier", alias="champion", follow=True, version=""),
            endpoint("echo", 2),
        ]
    )
    instances = (
        "mlflow-model@demo-classifier-5203.service active 901 /opt/mlflow/models/demo-classifier/4 "
        "/opt/mlflow/model-envs/a9918f2ac6390477/env/bin/python 3725\n"
        "mlflow-model@echo-5201.service active 902 /opt/mlflow/models/echo/3 "
        "/opt/mlflow/envs/aefcd897a19d61bb/bin/python 65\n"
        "mlflow-model@echo-5202.service failed 0 - - -\n"
        "mlflow-model@demo-classifier-5204.service active 903 /opt/mlflow/models/demo-classifier/5 "
        "/opt/mlflow/model-envs/a9918f2ac6390477/env/bin/python 3\n"
    )
    upstreams = (
        "/etc/nginx/mlflow-models/demo-classifier.upstream.conf:    server 127.0.0.1:5203 max_fails=3;\n"
        "/etc/nginx/mlflow-models/echo.upstream.conf:    server 127.0.0.1:5201 max_fails=3;\n"
        "/etc/nginx/mlflow-models/echo.upstream.conf:    server 127.0.0.1:5202 max_fails=3;\n"
    )
    last = (
        "/var/log/nginx/mlflow-model-demo-classifier.log 10.0.0.1 - alice [29/Nov/2026:22:31:31 +0000] "
        '"POST /models/demo-classifier/invocations HTTP/1.1" 200 23 "-" "curl/7.88"\n'
    )
    rows = dict(
        plays.models_status(status_host(desired, instances, upstreams, last), Deployment(**BASE))
    )
    assert rows["demo-classifier"] == (
        "running 1/1, asked @champion (following), loaded version 4, env model a9918f2ac6390477, "
        "up 1h02m, last request 29/Nov/2026:22:31:31 +0000 (200), 512 MB per worker, "
        "https://203.0.113.10/models/demo-classifier/invocations"
    )
    assert rows["echo"].startswith(
        "DEGRADED 1/2, asked version 3, loaded version 3, env server aefcd897a19d61bb, up 1m05s, "
        "last request none"
    )
    # Started by a switch that has not reached nginx yet (or was interrupted).
    assert rows["demo-classifier-5204"] == "active, not in nginx (left over)"


def test_fab_models_without_endpoints_says_how_to_serve_one():
    rows = plays.models_status(status_host("", "", "", ""), Deployment(**BASE))
    assert rows == [("model endpoints", "none (fab serve-model --name NAME --alias A)")]


def test_the_model_instances_fact_reads_what_each_process_serves():
    found = facts.parse_model_instances(
        "mlflow-model@demo.v2-5201.service active 812 /opt/mlflow/models/demo.v2/3 "
        "/opt/mlflow/model-envs/0123/env/bin/python 120\n"
        "mlflow-model@x-y-5202.service activating 0 - - -\n"
        "mlflow-server@5001.service active 1 - - -\n"
    )
    assert found == [
        facts.ModelInstance(
            "demo.v2", 5201, "active", 812, "/opt/mlflow/models/demo.v2/3",
            "/opt/mlflow/model-envs/0123/env/bin/python", 120,
        ),
        facts.ModelInstance("x-y", 5202, "activating"),
    ]  # fmt: skip
    assert found[0].version == "3" and found[1].version == ""


def test_a_refused_endpoint_names_the_settings_and_the_numbers():
    host = status_host("", "", "", "")
    host.conn = ScriptedConnection(
        [
            {"run": f"$ {facts.RESOURCES.command}", "stdout": "2\n4194304\n20000000\n2147483648\n"},
            {"run": f"# {facts.file_text(PATHS['models_desired']).command}", "stdout": ""},
            {"run": f"# {facts.INSTANCES.command}", "stdout": ""},
        ]
    )
    with pytest.raises(
        PreflightError, match=r"they need 1024 MB .* has 274 MB .*mlflow-metrics.*model_memory_mb"
    ):
        models.room(host, Deployment(**BASE), "demo-classifier")
