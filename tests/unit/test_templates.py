"""Templates: every one renders for every setting combination, and its consumer accepts it.

The consumers are the real ones where this machine has them: systemd-analyze for the
units, nginx -t for the site, bash for the env file (systemd's EnvironmentFile
syntax is the shell's double-quote syntax), configparser and MLflow's own readers
for the auth config, MLflow's click parser for the server command line.
"""

from __future__ import annotations

import configparser
import hashlib
import itertools
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioning import artifact_streaming, lock
from provisioning import render as render_module
from provisioning.layout import FILES, PATHS
from provisioning.render import (
    RenderError,
    context,
    env_dir,
    env_hash,
    render,
    template_names,
)
from provisioning.settings import Deployment
from tests.unit.conftest import ADMIN_PASSWORD, NASTY_PASSWORD, NASTY_URI, valid_settings

TEMPLATES = render_module.TEMPLATES_DIR
#: NASTY_URI as the servers use it: the database's certificate verified against the VM's CAs.
SERVER_URI = NASTY_URI + "?sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt"
SERVER_PORTS = [5001, 5002, 5003]
FLASK_KEY = 'flask "key" with $HOME, 50% \\ # `x`'
KEK = 'kek $HOME "quoted" 100% \\ `x` and more to reach 32'
#: Values that exercise every special character of an env file, a shell and an ini file.
NASTY_ENV_VALUES = {
    "spaces": "a value with  spaces ",
    "quotes": "say \"hi\" and 'bye'",
    "percent": "100% %i %% %n",
    "dollar": "$HOME ${HOME} $$ $",
    "backslash": "C:\\path\\n\\\\ end\\",
    "hash": "#not-a-comment # still value",
    "backtick": "`id` $(id)",
    "semicolon": "a;b ; c",
}

CLOUDS = {"gcp": "gs://mlflow-gcp-bucket/artifacts", "aws": "s3://mlflow-aws-bucket/artifacts",
          "local": "s3://mlflow-local/artifacts"}  # fmt: skip
ARTIFACT_MODES = ("proxied", "direct")
TLS_MODES = ("self-signed", "provided", "letsencrypt")
LETSENCRYPT_ONLY = {"certbot-deploy-hook.sh.j2", "certbot-env.conf.j2", "nginx-acme.conf.j2",
                    "nginx-acme-http.conf.j2"}  # fmt: skip
MATRIX = list(itertools.product(CLOUDS, ARTIFACT_MODES, TLS_MODES))


def make_deployment(pem_dir: Path, cloud="aws", artifact_mode="proxied", tls_mode="self-signed",
                    **changes) -> Deployment:  # fmt: skip
    tls: dict = {}
    if tls_mode == "provided":
        tls = {"tls_cert_file": str(pem_dir / "server.crt"),
               "tls_key_file": str(pem_dir / "server.key")}  # fmt: skip
    elif tls_mode == "letsencrypt":
        tls = {"domain": "mlflow.example.com", "acme_email": "ops@example.com"}
    settings = valid_settings(
        cloud=cloud,
        artifacts_destination=CLOUDS[cloud],
        artifact_mode=artifact_mode,
        tls_mode=tls_mode,
        **tls,
    )
    settings.update(changes)
    return Deployment(**settings)


def make_context(deployment: Deployment, job_execution=False, ports=SERVER_PORTS) -> dict:
    return context(
        deployment,
        server_ports=ports,
        flask_secret_key=FLASK_KEY,
        job_execution=job_execution,
        kek_passphrase=KEK,
    )


@pytest.fixture
def ctx(pem_dir) -> dict:
    return make_context(make_deployment(pem_dir))


# --------------------------------------------------------------------------- rendering


def test_every_template_is_installed_somewhere():
    partials = {"hardening.conf.j2", "nginx-acme-http.conf.j2"}
    assert set(template_names()) == set(FILES) | partials
    for file in FILES.values():
        assert file.path in PATHS.values()


@pytest.mark.parametrize(("cloud", "artifact_mode", "tls_mode"), MATRIX)
def test_every_template_renders_for_every_combination(pem_dir, cloud, artifact_mode, tls_mode):
    ctx = make_context(make_deployment(pem_dir, cloud, artifact_mode, tls_mode))
    for name in template_names():
        if name in LETSENCRYPT_ONLY and tls_mode != "letsencrypt":
            continue  # installed only with Let's Encrypt
        text = render(name, ctx)
        assert text.endswith("\n") and not text.endswith("\n\n\n"), name
        assert "None" not in text or name.endswith(".py"), name  # Python programs say None
    env_file = parse_env_file(render("mlflow.env.j2", ctx))
    if artifact_mode == "proxied":
        assert env_file["MLFLOW_SERVE_ARTIFACTS"] == "true"
        assert env_file["MLFLOW_ARTIFACTS_DESTINATION"] == CLOUDS[cloud]
        assert "MLFLOW_DEFAULT_ARTIFACT_ROOT" not in env_file
    else:
        assert env_file["MLFLOW_SERVE_ARTIFACTS"] == "false"
        assert env_file["MLFLOW_DEFAULT_ARTIFACT_ROOT"] == CLOUDS[cloud]
        assert "MLFLOW_ARTIFACTS_DESTINATION" not in env_file
    site = render("nginx-mlflow.conf.j2", ctx)
    assert ("listen 80;" in site) == (tls_mode == "letsencrypt")
    assert ("/.well-known/acme-challenge/" in site) == (tls_mode == "letsencrypt")
    if tls_mode == "letsencrypt":
        assert "ssl_certificate /etc/letsencrypt/live/mlflow.example.com/fullchain.pem;" in site
        assert "ssl_certificate_key /etc/letsencrypt/live/mlflow.example.com/privkey.pem;" in site
    else:
        assert f"ssl_certificate {PATHS['tls_cert']};" in site
        assert f"ssl_certificate_key {PATHS['tls_key']};" in site


@pytest.mark.parametrize(
    ("template", "remove", "variable"),
    [
        ("environment.yml.j2", "pip_requirements", "pip_requirements"),
        ("mlflow.env.j2", "admin_password", "admin_password"),
        ("basic_auth.ini.j2", "backend_store_uri", "backend_store_uri"),
        ("mlflow-server@.service.j2", "allowed_hosts", "allowed_hosts"),
        ("mlflow-migrate.service.j2", "user", "user"),
        ("nginx-upstream.conf.j2", "server_ports", "server_ports"),
        ("nginx-mlflow.conf.j2", "server_names", "server_names"),
        ("mlflow-server@.service.j2", "paths.state_dir", "state_dir"),
    ],
)
def test_missing_variable_names_template_line_and_variable(ctx, template, remove, variable):
    ctx = dict(ctx, paths=dict(ctx["paths"]))
    if remove.startswith("paths."):
        del ctx["paths"][remove.removeprefix("paths.")]
    else:
        del ctx[remove]
    with pytest.raises(RenderError) as raised:
        render(template, ctx)
    error = raised.value
    source_lines = (TEMPLATES / error.source).read_text().splitlines()
    first_use = next(i for i, line in enumerate(source_lines, 1) if variable in line)
    assert error.template == template
    assert error.line == first_use
    assert f"{template}" in str(error) and f"line {first_use}" in str(error)
    assert repr(variable) in str(error)


def test_unknown_template_is_a_render_error(ctx):
    with pytest.raises(RenderError, match="no-such.j2"):
        render("no-such.j2", ctx)


def test_context_rejects_bad_ports(pem_dir):
    deployment = make_deployment(pem_dir)
    for ports in ([], [80], [5001, 5001], ["5001"]):
        with pytest.raises(ValueError, match="port"):
            make_context(deployment, ports=ports)


# --------------------------------------------------------------------------- environment.yml


def pip_part(environment_yml: str) -> tuple[list, list[str]]:
    deps = yaml.safe_load(environment_yml)["dependencies"]
    return [d for d in deps if isinstance(d, str)], next(
        d["pip"] for d in deps if isinstance(d, dict)
    )


@pytest.mark.parametrize("cloud", ["gcp", "aws", "local"])
def test_environment_yml_installs_the_committed_lock_with_every_hash_required(pem_dir, cloud):
    """conda gets Python and pip only; everything else is the lock, by its sha256, plus the
    kit's wheel by its own sha256 (pip's hash-checking mode covers every file or none)."""
    text = render("environment.yml.j2", make_context(make_deployment(pem_dir, cloud)))
    assert yaml.safe_load(text)["channels"] == ["conda-forge", "nodefaults"]
    conda, pip = pip_part(text)
    assert conda == ["python=3.11", "pip"]
    locked = lock.find("3.17.2")
    wheel = artifact_streaming.wheel()
    digest = hashlib.sha256(wheel.data).hexdigest()
    assert pip == [
        "--require-hashes",
        f"-r /opt/mlflow/locks/mlflow-3.17.2.{locked.sha256}.txt",
        f"mlflow_kit_artifacts @ file:///opt/mlflow/wheels/{wheel.filename} --hash=sha256:{digest}",
    ]
    # What the servers need is in the lock, pinned: MLflow itself, both storage clients
    # (one lock for S3 and GCS hosts), the driver, uvicorn's parser and loop.
    for name in ("mlflow", "boto3", "google-cloud-storage", "psycopg2-binary", "httptools",
                 "uvloop", "prometheus-flask-exporter"):  # fmt: skip
        assert re.search(
            rf"^{name}==[^ ]+ (; [^\\]+ )?\\\n    --hash=sha256:", locked.text, re.M
        ), name
    assert "\nmlflow==3.17.2 \\\n" in locked.text


def test_environment_yml_unlocked_names_the_same_packages_unpinned(pem_dir):
    deployment = make_deployment(pem_dir, "aws", install_from_lock=False)
    conda, pip = pip_part(render("environment.yml.j2", make_context(deployment)))
    assert conda == ["python=3.11", "pip"]
    wheel = f"/opt/mlflow/wheels/{artifact_streaming.wheel().filename}"
    assert pip == [*lock.requirements("3.17.2"), wheel]
    assert pip[0] == "mlflow[auth]==3.17.2"


def test_environment_yml_is_deterministic_and_names_its_env(pem_dir):
    first = render("environment.yml.j2", make_context(make_deployment(pem_dir), ports=[5001]))
    # Nothing but the environment's content matters: ports, TLS, secrets do not.
    again = render(
        "environment.yml.j2",
        make_context(make_deployment(pem_dir, tls_mode="letsencrypt", admin_password="x" * 20)),
    )
    assert first == again
    assert env_dir(first) == f"/opt/mlflow/envs/{env_hash(first)}"
    assert re.fullmatch(r"[0-9a-f]{16}", env_hash(first))
    newer = render(
        "environment.yml.j2",
        make_context(make_deployment(pem_dir, mlflow_version="3.17.3", install_from_lock=False)),
    )
    assert env_hash(newer) != env_hash(first)


def test_an_edited_lock_is_another_environment(pem_dir, tmp_path, monkeypatch):
    """The environment directory follows the lock's bytes, not only its name."""
    first = render("environment.yml.j2", make_context(make_deployment(pem_dir)))
    copy = tmp_path / "locks"
    shutil.copytree(lock.LOCKS_DIR, copy)
    monkeypatch.setattr(lock, "LOCKS_DIR", copy)
    same = render("environment.yml.j2", make_context(make_deployment(pem_dir)))
    assert env_dir(same) == env_dir(first)
    path = copy / "mlflow-3.17.2.txt"
    text = path.read_text()
    pin = re.search(r"^boto3==\S+ \\\n    --hash=sha256:([0-9a-f]{64})", text, re.M)
    path.write_text(text.replace(pin.group(1), "0" * 64))
    edited = render("environment.yml.j2", make_context(make_deployment(pem_dir)))
    assert env_dir(edited) != env_dir(first)
    assert lock.find("3.17.2").sha256 in edited


# --------------------------------------------------------------------------- env file


def parse_env_file(text: str) -> dict[str, str]:
    """The EnvironmentFile parser of systemd 252 (src/basic/env-file.c), for the syntax
    the kit writes: comments, KEY=VALUE, double quotes with \\ escapes of \\ " $ `."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line[0] in "#;":
            continue
        key, sep, rest = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        value, i, quoted, was_quoted = [], 0, False, False
        rest = rest.lstrip()
        while i < len(rest):
            c = rest[i]
            if quoted:
                if c == '"':
                    quoted = False
                elif c == "\\" and i + 1 < len(rest):
                    i += 1
                    if rest[i] not in '"\\`$':
                        value.append("\\")  # systemd keeps other backslashes, as a shell does
                    value.append(rest[i])
                else:
                    value.append(c)
            elif c == '"':
                quoted = was_quoted = True
            else:
                value.append(c)
            i += 1
        assert not quoted, f"unterminated quote: {raw!r}"
        text = "".join(value)
        result[key.strip()] = text if was_quoted else text.rstrip()
    return result


def source_with_bash(path: Path) -> dict[str, str]:
    """What a POSIX shell makes of the file: an independent reading of the same syntax."""
    out = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; env -0', "bash", str(path)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_env_file_round_trips_every_secret(tmp_path, pem_dir):
    deployment = make_deployment(
        pem_dir,
        "local",
        storage_env={f"KIT_{k.upper()}": v for k, v in NASTY_ENV_VALUES.items()},
        storage_secret_env={"AWS_SECRET_ACCESS_KEY": NASTY_ENV_VALUES["dollar"] + "'\"\\"},
        extra_ca_certs=[str(pem_dir / "ca.crt")],
        job_execution=True,
    )
    ctx = make_context(deployment, job_execution=True)
    text = render("mlflow.env.j2", ctx)
    expected = {
        "MLFLOW_BACKEND_STORE_URI": SERVER_URI,
        "MLFLOW_ARTIFACTS_DESTINATION": CLOUDS["local"],
        "MLFLOW_SERVE_ARTIFACTS": "true",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": FLASK_KEY,
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": KEK,
        "MLFLOW_CRYPTO_KEK_VERSION": "1",
        "MLFLOW_AUTH_CONFIG_PATH": "/etc/mlflow/basic_auth.ini",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true",
        # 100 connections less 10 kept free, over 3 instances of 4 engines each.
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "4",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "3",
        "MLFLOW_KIT_CONFIG": ctx["config_digest"],
        # No usage telemetry unless the settings turn it on.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "AWS_SECRET_ACCESS_KEY": NASTY_ENV_VALUES["dollar"] + "'\"\\",
        "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        **{f"KIT_{k.upper()}": v for k, v in NASTY_ENV_VALUES.items()},
    }
    assert parse_env_file(text) == expected
    path = tmp_path / "mlflow.env"
    path.write_text(text)
    from_bash = source_with_bash(path)
    assert {k: from_bash.get(k) for k in expected} == expected


def test_env_file_without_extra_cas_sets_no_bundle(ctx):
    env = parse_env_file(render("mlflow.env.j2", ctx))
    assert not {"REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "SSL_CERT_FILE"} & set(env)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_env_parser_is_faithful_to_systemd_escapes():
    # What systemd documents: \\ \" \$ \` unescape, any other backslash stays.
    assert parse_env_file('A="x\\"y\\\\z\\$w\\`v\\nq"\n') == {"A": 'x"y\\z$w`v\\nq'}


# --------------------------------------------------------------------------- mlflow reads it


def server_command(unit_text: str, port: int) -> list[str]:
    """The ExecStart= argv of a rendered server unit, as systemd would split it."""
    joined = re.sub(r"\\\n\s*", " ", unit_text)
    line = next(x for x in joined.splitlines() if x.startswith("ExecStart="))
    command = line.removeprefix("ExecStart=").replace("%i", str(port))
    assert "%" not in command.replace("%%", "") and "$" not in command.replace("$$", "")
    return [arg.replace("%%", "%").replace("$$", "$") for arg in shlex.split(command)]


@pytest.mark.parametrize(
    ("stream_downloads", "app_name"), [(False, "basic-auth"), (True, "kit-streaming")]
)
def test_streamed_downloads_run_the_kit_s_app_around_basic_auth(
    pem_dir, stream_downloads, app_name
):
    ctx = make_context(make_deployment(pem_dir, stream_downloads=stream_downloads))
    argv = server_command(render("mlflow-server@.service.j2", ctx), 5002)
    assert argv[argv.index("--app-name") + 1] == app_name
    env = parse_env_file(render("mlflow.env.j2", ctx))
    assert env.get("MLFLOW_KIT_AUTH_APP") == ("basic-auth" if stream_downloads else None)


@pytest.mark.parametrize("artifact_mode", ARTIFACT_MODES)
def test_mlflow_server_reads_the_unit_and_env_file_as_intended(pem_dir, monkeypatch, artifact_mode):
    from mlflow.cli import server

    # basic-auth itself: kit-streaming (the default around it) is an entry point of the kit
    # wheel, installed on the VM and not in this virtualenv, so this click cannot name it.
    deployment = make_deployment(pem_dir, "aws", artifact_mode, stream_downloads=False)
    ctx = make_context(deployment)
    argv = server_command(render("mlflow-server@.service.j2", ctx), 5002)
    assert argv[:2] == [f"{PATHS['current_env']}/bin/mlflow", "server"]
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    for name, value in parse_env_file(render("mlflow.env.j2", ctx)).items():
        monkeypatch.setenv(name, value)
    params = server.make_context("server", argv[2:]).params
    assert params["host"] == "127.0.0.1"
    assert params["port"] == 5002
    assert str(params["workers"]) == "1"
    assert params["app_name"] == "basic-auth"
    assert params["backend_store_uri"] == SERVER_URI
    assert params["allowed_hosts"].split(",")[:2] == ["203.0.113.10", "203.0.113.10:443"]
    assert params["cors_allowed_origins"] == "https://203.0.113.10"
    if artifact_mode == "proxied":
        assert params["serve_artifacts"] is True
        assert params["artifacts_destination"] == CLOUDS["aws"]
    else:
        assert params["serve_artifacts"] is False
        assert params["default_artifact_root"] == CLOUDS["aws"]
    # No secret on the command line (it would show in ps and the journal).
    for secret in (NASTY_URI, NASTY_PASSWORD, ADMIN_PASSWORD, FLASK_KEY, KEK):
        assert secret not in " ".join(argv)


def test_server_runs_uvicorn_with_the_c_parser_and_loop_and_no_access_log(pem_dir):
    """What `mlflow server` hands uvicorn, parsed by uvicorn's own command line.

    Measured through nginx on a 2-core host (README): the pure-Python h11 parser, asyncio's
    loop and uvicorn's access log cost about 2 ms of an instance's CPU per log_metric.
    Named explicitly, a missing package stops the server instead of a silent fallback.
    """
    from mlflow.cli import server
    from mlflow.server import _build_uvicorn_command
    from uvicorn.main import main as uvicorn_main

    # basic-auth itself, as above (kit-streaming is not installed in this virtualenv).
    ctx = make_context(make_deployment(pem_dir, stream_downloads=False))
    argv = server_command(render("mlflow-server@.service.j2", ctx), 5001)
    params = server.make_context("server", argv[2:]).params
    command = _build_uvicorn_command(params["uvicorn_opts"], "127.0.0.1", 5001, 1, "app:app")
    assert command[1:3] == ["-m", "uvicorn"]
    uvicorn = uvicorn_main.make_context("uvicorn", command[3:]).params
    assert (uvicorn["http"], uvicorn["loop"], uvicorn["access_log"]) == (
        "httptools",
        "uvloop",
        False,
    )
    assert (uvicorn["port"], uvicorn["workers"]) == (5001, 1)
    # ... and the environment bootstrap builds provides both (they are in its lock).
    environment_yml = render("environment.yml.j2", ctx)
    locked = lock.find("3.17.2")
    assert locked.sha256 in environment_yml
    assert re.search(r"^httptools==", locked.text, re.M)
    assert re.search(r"^uvloop==", locked.text, re.M)


def test_basic_auth_ini_round_trips_the_uri(tmp_path, monkeypatch, ctx):
    from mlflow.server.auth.config import read_auth_config

    path = tmp_path / "basic_auth.ini"
    path.write_text(render("basic_auth.ini.j2", ctx))
    parser = configparser.ConfigParser()  # BasicInterpolation, as MLflow reads it
    parser.read(path)
    assert parser["mlflow"]["database_uri"] == SERVER_URI
    assert "admin_password" not in parser["mlflow"]
    assert ADMIN_PASSWORD not in path.read_text()

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.database_uri == SERVER_URI
    assert config.default_permission == "READ"
    assert config.admin_username == "admin"
    assert config.admin_password == ADMIN_PASSWORD
    # Without the credential cache every request pays a PBKDF2 hash: a few requests/s.
    assert config.auth_cache_ttl_seconds > 0


# --------------------------------------------------------------------------- systemd

needs_systemd_analyze = pytest.mark.skipif(
    not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed"
)
UNITS = {"mlflow-server@.service.j2": "mlflow-server@5001.service",
         "mlflow-migrate.service.j2": "mlflow-migrate.service"}  # fmt: skip


@pytest.fixture(scope="session")
def system_units(tmp_path_factory) -> Path:
    """Debian's own unit files (targets, slices), for units to be verified against."""
    if not Path("/usr/lib/systemd/system/multi-user.target").exists():
        pytest.skip("no systemd unit files on this machine")
    out = tmp_path_factory.mktemp("system-units")
    for unit in Path("/usr/lib/systemd/system").iterdir():
        if unit.is_file() and not unit.is_symlink():
            shutil.copy(unit, out / unit.name)
    return out


@pytest.fixture
def unit_root(tmp_path, system_units) -> Path:
    """A root file system holding the rendered units and the programs they run."""
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system")
    (root / "etc/systemd/system").mkdir(parents=True)
    # ... and the coreutils the server unit empties its temporary directory with.
    programs = (f"{PATHS['current_env']}/bin/mlflow", f"{PATHS['next_env']}/bin/python",
                "/usr/bin/rm", "/usr/bin/mkdir")  # fmt: skip
    for program in programs:
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def install_units(root: Path, ctx: dict, edit=lambda name, text: text) -> None:
    for template in UNITS:
        dest = Path(FILES[template].path)
        (root / dest.relative_to("/")).write_text(edit(dest.name, render(template, ctx)))


def verify(root: Path, unit: str) -> tuple[int, str]:
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", unit],
        capture_output=True,
        text=True,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


@needs_systemd_analyze
@pytest.mark.parametrize("tls_mode", TLS_MODES)
def test_units_pass_systemd_analyze_verify(unit_root, pem_dir, tls_mode):
    install_units(unit_root, make_context(make_deployment(pem_dir, tls_mode=tls_mode)))
    for unit in UNITS.values():
        assert verify(unit_root, unit) == (0, ""), unit


@needs_systemd_analyze
def test_verify_catches_a_broken_directive(unit_root, ctx):
    install_units(unit_root, ctx, lambda name, text: text.replace("Restart=", "Restrat=", 1))
    rc, output = verify(unit_root, "mlflow-server@5001.service")
    assert "Unknown key 'Restrat'" in output


@needs_systemd_analyze
def test_verify_catches_a_missing_program(unit_root, ctx):
    install_units(unit_root, ctx)
    (unit_root / PATHS["next_env"].lstrip("/") / "bin/python").unlink()
    rc, output = verify(unit_root, "mlflow-migrate.service")
    assert rc != 0 and "/opt/mlflow/next/bin/python" in output


def exposure(path: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_systemd_analyze
@pytest.mark.parametrize("template", UNITS)
def test_units_score_under_2_in_systemd_analyze_security(tmp_path, ctx, template):
    path = tmp_path / UNITS[template]
    path.write_text(render(template, ctx))
    score = exposure(path)
    assert score < 2.0, f"{UNITS[template]} exposure {score}"


@needs_systemd_analyze
def test_security_score_parser_sees_an_unhardened_unit(tmp_path):
    path = tmp_path / "bare.service"
    path.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(path) > 9.0


def test_units_carry_the_hardening_and_restart_policy(ctx):
    unit = render("mlflow-server@.service.j2", ctx)
    for directive in (
        "User=mlflow", "Group=mlflow", "EnvironmentFile=/etc/mlflow/mlflow.env",
        "WorkingDirectory=/var/lib/mlflow", "Restart=always", "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/mlflow", "PrivateTmp=yes", "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n", "UMask=0027", "WantedBy=multi-user.target",
        "After=network-online.target", "Wants=network-online.target",
        "SystemCallFilter=@system-service",
    ):  # fmt: skip
        assert directive in unit, directive
    # MemoryDenyWriteExecute breaks libffi closures and JITs some wheels use.
    assert "MemoryDenyWriteExecute" not in unit
    migrate = render("mlflow-migrate.service.j2", ctx)
    assert "Type=oneshot" in migrate and "\n[Install]" not in migrate
    assert f"ExecStart={PATHS['next_env']}/bin/python {PATHS['migrate_script']}\n" in migrate


# --------------------------------------------------------------------------- nginx


def nginx_test(tmp_path: Path, site: str, ctx: dict) -> subprocess.CompletedProcess:
    """``nginx -t`` of the site with its upstream file, both as rendered, under ``tmp_path``."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    upstream = tmp_path / "mlflow-upstream.conf"
    upstream.write_text(render("nginx-upstream.conf.j2", ctx))
    (tmp_path / "mlflow.conf").write_text(site.replace(PATHS["nginx_upstream"], str(upstream)))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/logs/error.log;\n"
        "events {}\n"
        "http {\n"
        f"    access_log {tmp_path}/logs/access.log;\n"
        f"    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n"
        f"    include {tmp_path}/mlflow.conf;\n"
        "}\n"
    )
    return subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "logs/error.log"),
         "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True,
    )  # fmt: skip


needs_nginx = pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")


@needs_nginx
@pytest.mark.parametrize("tls_mode", TLS_MODES)
def test_nginx_accepts_the_site(tmp_path, pem_dir, tls_mode):
    ctx = make_context(make_deployment(pem_dir, tls_mode=tls_mode))
    # nginx -t loads the certificates, so point it at real ones made for the test.
    ctx.update(tls_cert=str(pem_dir / "server.crt"), tls_key=str(pem_dir / "server.key"))
    result = nginx_test(tmp_path, render("nginx-mlflow.conf.j2", ctx), ctx)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr, result.stderr


@needs_nginx
def test_nginx_test_catches_a_broken_site(tmp_path, pem_dir, ctx):
    ctx.update(tls_cert=str(pem_dir / "server.crt"), tls_key=str(pem_dir / "server.key"))
    site = render("nginx-mlflow.conf.j2", ctx).replace("proxy_buffering off;", "proxy_buffering;")
    assert nginx_test(tmp_path, site, ctx).returncode != 0


def test_nginx_site_proxies_big_uploads_to_every_instance(ctx):
    site = render("nginx-mlflow.conf.j2", ctx)
    assert f"include {PATHS['nginx_upstream']};" in site
    upstream = render("nginx-upstream.conf.j2", ctx)
    assert "hash $connection;" in upstream and "keepalive 32;" in upstream
    # uvicorn closes idle connections after 5 s: nginx must give them up first.
    assert "keepalive_timeout 4s;" in upstream
    assert re.findall(r"server 127\.0\.0\.1:(\d+) max_fails=3 fail_timeout=10s;", upstream) == [
        str(p) for p in SERVER_PORTS
    ]
    drained = render("nginx-upstream.conf.j2", dict(ctx, down_ports=[SERVER_PORTS[1]]))
    assert f"server 127.0.0.1:{SERVER_PORTS[1]} max_fails=3 fail_timeout=10s down;" in drained
    for directive in (
        "client_max_body_size 0;", "proxy_request_buffering off;", "proxy_buffering off;",
        "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;", "proxy_http_version 1.1;",
        'proxy_set_header Connection "";', "proxy_set_header X-Forwarded-Proto $scheme;",
        "ssl_protocols TLSv1.2 TLSv1.3;", "Strict-Transport-Security", "location = /health",
        "server_name 203.0.113.10;",
    ):  # fmt: skip
        assert directive in site, directive
    assert "listen 80" not in site


def test_nginx_answers_health_503_to_the_balancer_while_drained(ctx):
    site = render("nginx-mlflow.conf.j2", ctx)
    health = site[site.index("location = /health {") :]
    health = health[: health.index("\n    }\n")]
    # The flag turns /health to 503 for everyone but loopback (the kit's own checks)...
    assert f"if (-f {PATHS['drain_flag']}) {{" in health
    assert 'if ($remote_addr ~ "^(127\\.0\\.0\\.1|::1)$") {' in health
    assert 'return 503 "draining\\n";' in health
    assert health.index("return 503") < health.index("proxy_pass http://mlflow;")
    # ... and only /health: the API and UI keep being served while drained.
    assert site.count(PATHS["drain_flag"]) == 1


# --------------------------------------------------------------------------- scripts


def test_certbot_hook_is_valid_shell(pem_dir, tmp_path):
    ctx = make_context(make_deployment(pem_dir, tls_mode="letsencrypt"))
    hook = tmp_path / "hook"
    hook.write_text(render("certbot-deploy-hook.sh.j2", ctx))
    subprocess.run(["sh", "-n", str(hook)], check=True)
    assert '*" mlflow.example.com "*) systemctl reload nginx' in hook.read_text()


def run_migrate(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    script = tmp_path / "mlflow-migrate"
    script.write_text(render("mlflow-migrate.py", {}))
    return subprocess.run(
        [sys.executable, str(script)],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.mark.service  # imports all of MLflow and runs every migration twice: ~15 s
def test_migrate_script_upgrades_both_schemas_in_one_database(tmp_path, ctx):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    auth_config = tmp_path / "basic_auth.ini"
    auth_config.write_text(render("basic_auth.ini.j2", dict(ctx, backend_store_uri=uri)))
    env = {"MLFLOW_BACKEND_STORE_URI": uri, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config)}
    for _ in range(2):  # the second run finds both at head
        result = run_migrate(tmp_path, env)
        assert result.returncode == 0, result.stderr
        assert "schemas are up to date" in result.stderr
    tables = {row[0] for row in sqlite3.connect(db).execute("select name from sqlite_master")}
    assert {"alembic_version", "alembic_version_auth", "experiments", "runs", "users"} <= tables


def test_migrate_script_reports_failure_without_the_password(tmp_path, ctx):
    # Nothing listens on port 9 of loopback: the connection is refused at once.
    uri = "postgresql+psycopg2://mlflow:sekrit-pw-123@127.0.0.1:9/mlflow"
    auth_config = tmp_path / "basic_auth.ini"
    auth_config.write_text(render("basic_auth.ini.j2", dict(ctx, backend_store_uri=uri)))
    result = run_migrate(
        tmp_path, {"MLFLOW_BACKEND_STORE_URI": uri, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config)}
    )
    assert result.returncode == 1
    assert "mlflow-migrate:" in result.stderr and "127.0.0.1" in result.stderr
    assert "sekrit-pw-123" not in result.stderr + result.stdout


def test_migrate_script_needs_its_environment(tmp_path):
    result = run_migrate(tmp_path, {})
    assert result.returncode == 2
    assert "MLFLOW_BACKEND_STORE_URI" in result.stderr


def test_telemetry_is_off_unless_the_settings_turn_it_on(pem_dir):
    off = parse_env_file(render("mlflow.env.j2", make_context(make_deployment(pem_dir))))
    assert off["MLFLOW_DISABLE_TELEMETRY"] == "true" and off["DO_NOT_TRACK"] == "true"
    on = parse_env_file(
        render("mlflow.env.j2", make_context(make_deployment(pem_dir, telemetry=True)))
    )
    assert "MLFLOW_DISABLE_TELEMETRY" not in on and "DO_NOT_TRACK" not in on


@pytest.mark.parametrize(
    ("changes", "query"),
    [
        ({}, {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/certs/ca-certificates.crt"}),
        ({"db_ca_url": "https://truststore.example.com/eu-west-1-bundle.pem"},
         {"sslmode": "verify-full", "sslrootcert": "/etc/mlflow/db-ca.pem"}),
        ({"db_tls": "require"}, {"sslmode": "require"}),
        ({"backend_store_uri": NASTY_URI + "?sslmode=disable&connect_timeout=10"},
         {"connect_timeout": "10", "sslmode": "verify-full",
          "sslrootcert": "/etc/ssl/certs/ca-certificates.crt"}),
    ],
    ids=["system-cas", "fetched-ca", "require", "other-options-kept"],
)  # fmt: skip
def test_the_servers_verify_the_database_unless_told_not_to(pem_dir, changes, query):
    from sqlalchemy.engine import make_url

    ctx = make_context(make_deployment(pem_dir, **changes))
    url = make_url(parse_env_file(render("mlflow.env.j2", ctx))["MLFLOW_BACKEND_STORE_URI"])
    assert url.password == NASTY_PASSWORD
    assert dict(url.query) == query


@needs_nginx
def test_nginx_accepts_the_first_let_s_encrypt_phase_alone(tmp_path, pem_dir):
    ctx = make_context(make_deployment(pem_dir, tls_mode="letsencrypt"))
    site = render("nginx-acme.conf.j2", ctx)
    assert "listen 80;" in site and "listen 443" not in site and "ssl_certificate" not in site
    result = nginx_test(tmp_path, site, ctx)
    assert result.returncode == 0, result.stderr
