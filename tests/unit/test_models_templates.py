"""The model endpoints' files: the unit, the program's pieces, and what reads them.

The consumers are the real ones where this machine has them: systemd-analyze for the
units (verify, and the exposure score), nginx -t for the locations and upstreams the
program writes, MLflow's own scoring-server command for the unit's ExecStart, the
conda stand-in's parser for the environment the program writes.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from provisioning.layout import FILES, MODEL_PORTS, PATHS
from provisioning.render import model_context, render, systemd_env_quote
from provisioning.settings import Deployment
from tests.standin.conda_installer import FAKE_CONDA
from tests.unit.conftest import ADMIN_PASSWORD, valid_settings
from tests.unit.test_golden import GOLDEN, UPDATE
from tests.unit.test_templates import (  # noqa: F401 - system_units is a fixture
    exposure,
    needs_nginx,
    needs_systemd_analyze,
    nginx_test,
    system_units,
    verify,
)

UNITS = {
    "mlflow-model@.service.j2": "mlflow-model@demo-classifier-5201.service",
    "mlflow-models.service.j2": "mlflow-models.service",
    "mlflow-models.timer.j2": "mlflow-models.timer",
}
#: (golden file, template)
CASES = [
    ("mlflow-model@.service", "mlflow-model@.service.j2"),
    ("mlflow-models.service", "mlflow-models.service.j2"),
    ("mlflow-models.timer", "mlflow-models.timer.j2"),
]
#: Exposure of the model unit in ``systemd-analyze security --offline=yes`` (systemd 252).
EXPOSURE = "1.1"


@pytest.fixture
def ctx() -> dict:
    return model_context(Deployment(**valid_settings()))


#: The VM-side program and its modules: template -> the module name it is imported as here.
PROGRAM = {
    "kit_models_files.py": "kit_models_files",
    "kit_models_host.py": "kit_models_host",
    "mlflow-models.py": "mlflow_models",
}


@pytest.fixture
def modules(ctx, tmp_path, monkeypatch) -> dict:
    """The rendered program and its modules, imported as the program imports them."""
    # The program turns bytecode caching off for its own process: only for this test here.
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    loaded = {}
    for template, name in PROGRAM.items():
        path = tmp_path / f"{name}.py"
        path.write_text(render(template, ctx))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # The program imports its modules by their plain names: these, and only in this test.
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        loaded[name] = module
    return loaded


@pytest.fixture
def kit_files(modules):
    return modules["kit_models_files"]


@pytest.fixture
def kit_host(modules):
    return modules["kit_models_host"]


@pytest.fixture
def program(modules):
    return modules["mlflow_models"]


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize(("golden", "template"), CASES, ids=[c[0] for c in CASES])
def test_rendered_model_file_equals_its_reviewed_copy(ctx, golden, template):
    text = render(template, ctx)
    path = GOLDEN / golden
    if UPDATE:
        path.write_text(text)
    diff = "".join(
        difflib.unified_diff(
            path.read_text().splitlines(True), text.splitlines(True), str(path), "rendered"
        )
    )
    assert not diff, f"{golden} differs from its reviewed copy:\n{diff}"


def test_the_model_files_need_no_server_secret():
    # model_context is all fab serve-model renders: it holds no secret and renders the
    # same bytes as the full bootstrap context does.
    from provisioning.render import context

    deployment = Deployment(**valid_settings())
    full = context(
        deployment,
        server_ports=[5001],
        flask_secret_key="k" * 32,
        job_execution=False,
        kek_passphrase="p" * 40,
    )
    small = model_context(deployment)
    assert not {"admin_password", "backend_store_uri", "flask_secret_key"} & set(small)
    for golden, template in CASES:
        assert render(template, full) == render(template, small), golden
    for template in PROGRAM:
        assert render(template, full) == render(template, small), template


# --------------------------------------------------------------------------- systemd


@needs_systemd_analyze
def test_model_units_pass_systemd_analyze_verify(tmp_path, system_units, ctx):  # noqa: F811
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system")
    (root / "etc/systemd/system").mkdir(parents=True)
    for program in (f"{PATHS['current_env']}/bin/python", "/usr/bin/env"):
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    for template in UNITS:
        dest = root / FILES[template].path.lstrip("/")
        dest.write_text(render(template, ctx))
    for unit in UNITS.values():
        assert verify(root, unit) == (0, ""), unit


@needs_systemd_analyze
def test_model_unit_exposure_is_the_reviewed_score_under_2(tmp_path, ctx):
    path = tmp_path / UNITS["mlflow-model@.service.j2"]
    path.write_text(render("mlflow-model@.service.j2", ctx))
    score = exposure(path)
    assert score < 2.0
    assert f"{score:.1f}" == EXPOSURE


def test_model_unit_isolates_the_model_from_the_server_and_the_network(ctx):
    unit = render("mlflow-model@.service.j2", ctx)
    for directive in (
        # Its own transient user: the server's env file (mlflow 0600) is out of reach.
        "DynamicUser=yes",
        f"InaccessiblePaths=-{PATHS['config_dir']} -{PATHS['state_dir']}",
        "IPAddressDeny=any", "IPAddressAllow=localhost", "ProtectSystem=strict",
        "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
        "Restart=always", "WantedBy=multi-user.target", "Environment=MLFLOW_DISABLE_TELEMETRY=true",
    ):  # fmt: skip
        assert directive in unit, directive
    assert "EnvironmentFile" not in unit and "ReadWritePaths" not in unit
    assert "User=" not in unit.replace("DynamicUser=", "")


def test_model_unit_runs_the_command_mlflow_models_serve_execs(ctx, monkeypatch):
    """`mlflow models serve --env-manager local` execs uvicorn on MLflow's scoring-server app
    with the model directory in __pyfunc_model_path__ (mlflow/pyfunc/scoring_server/get_cmd);
    the unit runs exactly that, one worker, on loopback."""
    from mlflow.pyfunc import scoring_server

    command, env = scoring_server.get_cmd("/opt/mlflow/models/m/1", 5201, "127.0.0.1", None, 1)
    words = shlex.split(command)
    model_env = {k for k in env if k not in os.environ}
    unit = render("mlflow-model@.service.j2", ctx)
    joined = re.sub(r"\\\n\s*", " ", unit)
    exec_start = next(x for x in joined.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[:4] == ["/usr/bin/env", "${KIT_MODEL_PYTHON}", "-m", "uvicorn"]
    assert words[0] == "uvicorn" and words[-1] == argv[-1] == "mlflow.pyfunc.scoring_server.app:app"
    for option, value in (
        ("--host", "127.0.0.1"),
        ("--port", "${KIT_MODEL_PORT}"),
        ("--workers", "1"),
    ):
        assert argv[argv.index(option) + 1] == value
        assert option in words
    # What the scoring server reads: the model path variable the program's drop-in sets.
    assert scoring_server._SERVER_MODEL_PATH in model_env
    assert scoring_server._SERVER_MODEL_PATH == "__pyfunc_model_path__"


# --------------------------------------------------------------------------- the program


def test_program_reads_the_server_env_file_as_systemd_and_the_kit_write_it(kit_files):
    values = {
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "STORAGE": 'a "quoted" $HOME \\ `x` 100%',
    }
    text = "# comment\n" + "".join(f"{k}={systemd_env_quote(v)}\n" for k, v in values.items())
    assert kit_files.parse_env_file(text) == values


def test_program_names_instances_and_parses_them_back(kit_files):
    unit = kit_files.instance_unit("demo.v2", 5203)
    assert unit == "mlflow-model@demo.v2-5203.service"
    assert kit_files.parse_instance(unit) == ("demo.v2", 5203)
    assert kit_files.parse_instance("mlflow-server@5001.service") is None


def test_program_drop_in_carries_what_the_instance_serves(kit_files):
    text = kit_files.dropin(
        "demo", "3", 5201, "/opt/mlflow/model-envs/abc/env/bin/python",
        "/opt/mlflow/models/demo/3", 512, "0123456789abcdef",
    )  # fmt: skip
    assert "MemoryMax=512M" in text and "MemoryHigh=460M" in text
    assert kit_files.parse_dropin(text) == {
        "KIT_MODEL_NAME": "demo",
        "KIT_MODEL_VERSION": "3",
        "KIT_MODEL_PORT": "5201",
        "KIT_MODEL_PYTHON": "/opt/mlflow/model-envs/abc/env/bin/python",
        "KIT_MODEL_SPEC": "0123456789abcdef",
        "__pyfunc_model_path__": "/opt/mlflow/models/demo/3",
    }


def test_program_spec_changes_with_what_an_instance_serves(kit_files):
    base = ("/opt/mlflow/models/demo/3", "/p/bin/python", 512, "unit")
    spec = kit_files.spec_digest(*base)
    assert kit_files.spec_digest(*base) == spec
    for i, other in enumerate(("/opt/mlflow/models/demo/4", "/q/bin/python", 768, "unit 2")):
        changed = list(base)
        changed[i] = other
        assert kit_files.spec_digest(*changed) != spec


def test_program_requirements_and_environment_for_the_conda_stand_in(kit_files, tmp_path):
    requirements = kit_files.requirement_lines(
        "mlflow==3.17.2\n# a comment\nscikit-learn==1.5.1  # trailing\n\n"
        'numpy>=1.26; python_version >= "3.10"\n'
    )
    assert requirements == [
        "mlflow==3.17.2", "scikit-learn==1.5.1", 'numpy>=1.26; python_version >= "3.10"'
    ]  # fmt: skip
    text = kit_files.environment_yml("3.11.7", requirements)
    path = tmp_path / "environment.yml"
    path.write_text(text)
    namespace: dict = {}
    exec(FAKE_CONDA.split('if __name__ == "__main__":')[0], namespace)  # noqa: S102
    assert namespace["parse"](str(path)) == (["python=3.11.7", "pip"], requirements)
    import yaml

    assert yaml.safe_load(text)["dependencies"][-1] == {"pip": requirements}
    # The same requirements name the same environment, whatever model asks for them.
    assert kit_files.env_name(text) == kit_files.env_name(
        kit_files.environment_yml("3.11.7", requirements)
    )
    assert kit_files.env_name(text) != kit_files.env_name(
        kit_files.environment_yml("3.11.8", requirements)
    )
    for line in ("-r other.txt", "--index-url https://pypi.example/simple"):
        with pytest.raises(kit_files.Failure, match="options and nested files"):
            kit_files.requirement_lines(line)


def test_program_serves_on_the_server_env_only_when_it_meets_every_requirement(kit_files):
    from importlib import metadata

    python = f"{sys.version_info[0]}.{sys.version_info[1]}.1"
    pyyaml = metadata.version("pyyaml")
    assert kit_files.satisfied_by_running_python(python, [f"pyyaml=={pyyaml}", "packaging"])
    assert kit_files.satisfied_by_running_python(python, ['no-such-dist==1; python_version < "3"'])
    for requirements in (["no-such-dist-kit==1.0"], [f"pyyaml!={pyyaml}"], ["pyyaml[extra]"]):
        assert not kit_files.satisfied_by_running_python(python, requirements), requirements
    assert not kit_files.satisfied_by_running_python("2.7.18", [])


def test_program_takes_free_ports_in_the_model_range(kit_files):
    assert kit_files.free_ports(2, {5201}, lambda port: port != 5202) == [5203, 5204]
    first, last = MODEL_PORTS
    with pytest.raises(kit_files.Failure, match="no 1 free ports"):
        kit_files.free_ports(1, set(range(first, last + 1)), lambda port: True)


@needs_nginx
def test_nginx_accepts_the_site_with_the_program_s_model_files(tmp_path, pem_dir, kit_files):
    from tests.unit.test_templates import make_context, make_deployment

    ctx = make_context(make_deployment(pem_dir))
    ctx.update(tls_cert=str(pem_dir / "server.crt"), tls_key=str(pem_dir / "server.key"))
    models = tmp_path / "models"
    models.mkdir()
    for name, ports in (("demo-classifier", [5201]), ("other.v2", [5202, 5203])):
        upstream = kit_files.upstream_conf(name, "3", ports)
        assert kit_files.upstream_ports(upstream) == ports
        upstream = upstream.replace(kit_files.AUTH_CACHE_DIR, str(tmp_path / "auth-"))
        (models / f"{name}.upstream.conf").write_text(upstream)
        location = kit_files.location_conf(name).replace(
            PATHS["nginx_log_dir"], str(tmp_path / "logs")
        )
        (models / f"{name}.location.conf").write_text(location)
    site = render("nginx-mlflow.conf.j2", ctx).replace(PATHS["nginx_models_dir"], str(models))
    result = nginx_test(tmp_path, site, ctx)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr, result.stderr
    # Without any endpoint the includes match nothing, and the site is still valid.
    for path in models.iterdir():
        path.unlink()
    assert nginx_test(tmp_path, site, ctx).returncode == 0


def test_model_locations_ask_mlflow_whether_the_caller_may_read_the_model(kit_files):
    text = kit_files.location_conf("demo")
    for path in ("invocations", "ping", "version"):
        block = text.split(f"location = /models/demo/{path} {{", 1)[1].split("}", 1)[0]
        assert "auth_request /_mlflow-model-auth/demo;" in block
        assert f"proxy_pass http://mlflow-model-demo/{path};" in block
    auth = text.split("location = /_mlflow-model-auth/demo {", 1)[1].split("}", 1)[0]
    assert "internal;" in auth and "proxy_method GET;" in auth
    # MLflow's basic-auth app answers this with 200 to a user who may read the model
    # (mlflow/server/auth: GetRegisteredModel -> validate_can_read_registered_model).
    assert "proxy_pass http://mlflow/api/2.0/mlflow/registered-models/get?name=demo;" in auth
    # A location's own proxy_set_header drops the server's: Host must be set again, or
    # MLflow's allowed-hosts check sees "mlflow".
    assert "proxy_set_header Host $host;" in auth


def test_mlflow_permission_check_for_the_endpoint_is_read_on_the_registered_model():
    from mlflow.protos.model_registry_pb2 import GetRegisteredModel
    from mlflow.server import auth

    validator = auth.BEFORE_REQUEST_VALIDATORS[("/api/2.0/mlflow/registered-models/get", "GET")]
    assert validator.__name__ == "_validate_can_read_registered_model_or_prompt"
    assert GetRegisteredModel.DESCRIPTOR.name == "GetRegisteredModel"


def test_program_refuses_an_unknown_command(program, capsys):
    assert program.main(["frobnicate"]) == 2
    assert program.main(["resolve", "bad name", "--alias", "x"]) == 2
    assert "letters, digits" in capsys.readouterr().err


def test_program_finds_its_modules_beside_it_as_installed(ctx, tmp_path):
    """On the VM the program runs as `python /opt/mlflow/bin/mlflow-models`, its modules
    beside it under their installed names, none of them on any other path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for template in PROGRAM:
        (bin_dir / FILES[template].path.rsplit("/", 1)[-1]).write_text(render(template, ctx))
    installed = bin_dir / PATHS["models_program"].rsplit("/", 1)[-1]
    result = subprocess.run(
        [sys.executable, str(installed), "resolve", "bad name", "--alias", "x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "letters, digits" in result.stderr
    # Run as root there: nothing written beside the files the kit manages.
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(
        FILES[t].path.rsplit("/", 1)[-1] for t in PROGRAM
    )
    assert {FILES[t].path.rsplit("/", 1)[0] for t in PROGRAM} == {PATHS["bin_dir"]}


def test_a_withdrawal_nginx_refuses_leaves_that_endpoint_serving(
    modules, program, kit_files, tmp_path, monkeypatch, capsys
):
    """Two endpoints no longer wanted, and nginx refuses the reload for the first: its files
    come back and its instance keeps serving; the second is still withdrawn, and the run
    fails naming the first."""
    systemd, nginx, desired = tmp_path / "systemd", tmp_path / "nginx", tmp_path / "models.json"
    systemd.mkdir()
    nginx.mkdir()
    desired.write_text('{"endpoints": []}')
    for name, port in (("refused", 5201), ("withdrawn", 5202)):
        unit = kit_files.instance_unit(name, port)
        (systemd / f"{unit}.d").mkdir()
        (systemd / f"{unit}.d" / "kit.conf").write_text(
            kit_files.dropin(name, "1", port, "/usr/bin/python3", f"/m/{name}/1", 512, "spec")
        )
        (nginx / f"{name}.upstream.conf").write_text(kit_files.upstream_conf(name, "1", [port]))
        (nginx / f"{name}.location.conf").write_text(kit_files.location_conf(name))
    for constant, value in (
        ("SYSTEMD_DIR", systemd),
        ("NGINX_DIR", nginx),
        ("DESIRED", desired),
        ("MODELS_DIR", tmp_path / "none"),
        ("ENVS_DIR", tmp_path / "none"),
    ):
        # Each module that reads the constant reads it from its own namespace.
        for module in modules.values():
            if hasattr(module, constant):
                monkeypatch.setattr(module, constant, str(value))
    stopped = []

    def run(argv, check=True, **_kwargs):
        if argv[:2] == ["nginx", "-t"] and not (nginx / "refused.location.conf").exists():
            raise kit_files.Failure("`nginx -t -q` exited 1: a stand-in for nginx's refusal")
        if argv[:3] == ["systemctl", "disable", "--now"]:
            stopped.append(argv[3])
        return subprocess.CompletedProcess(argv, 0, "", "")

    # The program runs commands itself and through its host module (unit states).
    for module in modules.values():
        if hasattr(module, "run"):
            monkeypatch.setattr(module, "run", run)
    assert program.reconcile() == 1

    assert (nginx / "refused.location.conf").read_text() == kit_files.location_conf("refused")
    assert kit_files.upstream_ports((nginx / "refused.upstream.conf").read_text()) == [5201]
    assert (systemd / "mlflow-model@refused-5201.service.d" / "kit.conf").exists()
    assert stopped == ["mlflow-model@withdrawn-5202.service"]
    assert sorted(p.name for p in nginx.iterdir()) == [
        "refused.location.conf",
        "refused.upstream.conf",
    ]
    out = capsys.readouterr().out
    summary = json.loads(out.split("summary: ", 1)[1])
    assert list(summary["failed"]) == ["refused"] and "nginx" in summary["failed"]["refused"]
    assert summary["changed"] == {"withdrawn": "withdrawn (1 instance(s) stopped)"}


def serve_on_loopback(answer):
    """An HTTP server on 127.0.0.1 answering every GET and POST with ``answer(handler)``'s
    status; (server, port, the paths and Authorization headers it saw)."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            seen.append((self.path, self.headers.get("Authorization")))
            body = b'{"ok": true}'
            self.send_response(answer(self))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = reply

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1], seen


@needs_nginx
@pytest.mark.service
def test_nginx_keeps_a_permission_answer_per_credential_for_a_few_seconds_only(tmp_path, kit_files):
    """Real nginx with the program's files: MLflow (here a stand-in that answers 200 to one
    credential) is asked once per credential within the cache time, a refusal every time,
    and a permission revoked in MLflow stops working once the time is over."""
    import socket
    import time

    import requests

    allowed = {"Basic cmVhZGVyOmdvb2Q=", "Bearer another-good-token"}
    mlflow, mlflow_port, asked = serve_on_loopback(
        lambda h: 200 if h.headers.get("Authorization") in allowed else 401
    )
    model, model_port, _ = serve_on_loopback(lambda h: 200)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seconds = 2
    upstream = kit_files.upstream_conf("demo", "1", [model_port]).replace(
        kit_files.AUTH_CACHE_DIR, str(tmp_path / "auth-")
    )
    location = kit_files.location_conf("demo").replace(
        PATHS["nginx_log_dir"], str(tmp_path / "logs")
    )
    location, shortened = re.subn(
        rf"(proxy_cache_valid [^;]*){kit_files.AUTH_CACHE_SECONDS}s;",
        rf"\g<1>{seconds}s;",
        location,
    )
    assert shortened == 1, location
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        ("user root root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\ndaemon off;\n"
        "events {}\nhttp {\n"
        f"  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n"
        f"  upstream mlflow {{ server 127.0.0.1:{mlflow_port}; keepalive 4; }}\n"
        f"{upstream}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    proxy_http_version 1.1;\n"
        f'    proxy_set_header Connection "";\n    proxy_buffering off;\n{location}\n  }}\n'
        "}\n"
    )
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "logs/error.log"),
         "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/models/demo/invocations"

    def call(authorization=None):
        headers = {"Authorization": authorization} if authorization else {}
        return requests.post(url, json={"inputs": [[1]]}, headers=headers, timeout=10).status_code

    def asks(authorization):
        return sum(1 for path, header in asked if header == authorization)

    try:
        for _ in range(100):
            with contextlib.suppress(requests.ConnectionError):
                call()
                break
            time.sleep(0.05)
        asked.clear()
        good, other = sorted(allowed)
        assert [call(good) for _ in range(5)] == [200] * 5
        assert asks(good) == 1  # asked once, then answered from the cache
        assert [call(other) for _ in range(3)] == [200] * 3
        assert asks(other) == 1  # its own entry: another credential is asked for itself
        assert [call("Basic d3Jvbmc6d3Jvbmc=") for _ in range(3)] == [401] * 3
        assert asks("Basic d3Jvbmc6d3Jvbmc=") == 3  # a refusal is never kept
        assert [call() for _ in range(3)] == [401] * 3
        assert asks(None) == 3  # nor is a request without credentials
        assert all(path == "/api/2.0/mlflow/registered-models/get?name=demo" for path, _ in asked)
        # Revoked in MLflow: still answered until the cache time is over, then refused.
        allowed.discard(good)
        assert call(good) == 200
        time.sleep(seconds + 1.5)  # nginx counts whole seconds
        assert call(good) == 401 and asks(good) == 2
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        mlflow.shutdown()
        model.shutdown()
    files = [f for f in (tmp_path / "auth-demo").rglob("*") if f.is_file()]
    assert files and all(f.stat().st_mode & 0o077 == 0 for f in files)
