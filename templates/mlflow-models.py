#!/usr/bin/env python3
# Managed by fab serve-model: do not edit on the VM, edit templates/ in the kit.
"""MLflow model endpoints on this host: the desired endpoints made real.

    mlflow-models reconcile                    (mlflow-models.service runs this)
    mlflow-models resolve NAME (--alias A | --version V)

``reconcile`` reads the desired endpoints (written by ``fab serve-model`` and
``fab unserve-model``) and converges the host to them: each endpoint's model
version downloaded once (through the tracking server on loopback, as the
``mlflow`` user), its Python environment built once per requirement set (conda,
as the ``mlflow`` user; or the server's own environment when it already meets the
model's requirements), single-worker scoring servers ``mlflow-model@NAME-PORT``
and nginx's upstream and locations for ``/models/NAME/``. A new version or
configuration is switched blue/green: the new instances start beside the old,
answer /ping, nginx switches to them with a graceful reload, the old ones drain
and stop. Nothing running is touched before the new version's environment is
built, so a model that cannot be built leaves its endpoint (and every other one)
as it was; the run then fails with pip's or conda's own error.

It runs as root with the server's environment and reads the admin's credentials
from the server's env file itself: nothing secret is on a command line or in
its own environment. The last line it prints is ``summary: {json}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

#: The kit's layout (provisioning.layout), rendered in by fab serve-model.
LAYOUT = json.loads('{{ {"paths": paths, "user": user, "ports": model_ports} | tojson }}')
PATHS = LAYOUT["paths"]
DESIRED = PATHS["models_desired"]
MODELS_DIR = PATHS["models_dir"]
ENVS_DIR = PATHS["model_envs_dir"]
CURRENT_ENV = PATHS["current_env"]
ENV_FILE = PATHS["env_file"]
CONDA = PATHS["conda_bin"]
UNIT_FILE = PATHS["model_unit"]
SYSTEMD_DIR = PATHS["systemd_dir"]
NGINX_DIR = PATHS["nginx_models_dir"]
NGINX_LOG_DIR = PATHS["nginx_log_dir"]
CA_BUNDLE = PATHS["system_ca_bundle"]
STATE_DIR = PATHS["state_dir"]
USER = LAYOUT["user"]
FIRST_PORT, LAST_PORT = LAYOUT["ports"]
TIMER = "mlflow-models.timer"
TRACKING = "https://127.0.0.1"
COMPLETE = ".kit-complete"
FAILED = ".kit-failed"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Server-only secrets a model download never needs.
SERVER_ONLY = re.compile(
    r"^(MLFLOW_BACKEND_STORE_URI|MLFLOW_FLASK_SERVER_SECRET_KEY|MLFLOW_CRYPTO_|MLFLOW_AUTH_)"
)
HEALTH_TIMEOUT_S = 300
DRAIN_TIMEOUT_S = 30
MAX_RESTARTS = 3
JOURNAL_LINES = 30


class Failure(Exception):
    """One endpoint could not be converged; the message is what the operator reads."""


# --------------------------------------------------------------------------- pure parts


def parse_env_file(text):
    """The kit's env file: KEY="value" lines, \\ " $ ` escaped inside double quotes."""
    values = {}
    for line in text.splitlines():
        key, sep, rest = line.partition("=")
        if not sep or line.lstrip().startswith("#"):
            continue
        if rest.startswith('"') and rest.endswith('"') and len(rest) >= 2:
            rest = re.sub(r'\\([\\"$`])', r"\1", rest[1:-1])
        values[key.strip()] = rest
    return values


def instance_unit(name, port):
    return f"mlflow-model@{name}-{port}.service"


def parse_instance(unit):
    """``mlflow-model@NAME-PORT.service`` -> (NAME, PORT), or None."""
    match = re.fullmatch(r"mlflow-model@(.+)-(\d+)\.service", unit)
    return (match.group(1), int(match.group(2))) if match else None


def requirement_lines(text):
    """requirements.txt -> its requirement lines; a Failure for options pip alone can read."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise Failure(
                f"requirements.txt line {line!r}: options and nested files are not supported"
            )
        lines.append(line)
    return lines


def environment_yml(python_version, requirements):
    """The conda environment for a model: its Python, then its requirements through pip.
    Its sha256 names the environment, so models with the same requirements share one."""
    out = [
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        f"  - python={python_version}",
        "  - pip",
        "  - pip:",
    ]
    out += [f"      - {json.dumps(line)}" for line in requirements]
    return "\n".join(out) + "\n"


def env_name(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def satisfied_by_running_python(python_version, requirements):
    """Whether this interpreter (the server's environment) meets the model's Python
    major.minor and every requirement, by its installed distributions' versions."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    if python_version.split(".")[:2] != [str(sys.version_info[0]), str(sys.version_info[1])]:
        return False
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return False
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        if requirement.extras or requirement.url:
            return False
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


def spec_digest(model_dir, python, memory_mb, unit_text):
    """What an instance serves and how: a new digest means new instances (blue/green)."""
    digest = hashlib.sha256()
    for part in (model_dir, python, str(memory_mb), unit_text):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def dropin(name, version, port, python, model_dir, memory_mb, spec):
    """The drop-in that makes the template unit one instance: what it serves, its memory."""
    env = {
        "KIT_MODEL_NAME": name,
        "KIT_MODEL_VERSION": version,
        "KIT_MODEL_PORT": str(port),
        "KIT_MODEL_PYTHON": python,
        "KIT_MODEL_SPEC": spec,
        # What `mlflow models serve` hands the scoring server it execs.
        "__pyfunc_model_path__": model_dir,
    }
    lines = ["# Written by mlflow-models: do not edit (fab serve-model converges it).", "[Service]"]
    lines += [f'Environment="{key}={value}"' for key, value in env.items()]
    lines += [f"MemoryHigh={memory_mb * 9 // 10}M", f"MemoryMax={memory_mb}M"]
    return "\n".join(lines) + "\n"


def parse_dropin(text):
    values = {}
    for key, value in re.findall(r'^Environment="([^=]+)=(.*)"$', text, re.M):
        values[key] = value
    return values


def upstream_conf(name, version, ports):
    servers = [f"    server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;" for port in ports]
    lines = [
        f"# Written by mlflow-models: model {name} version {version}; do not edit.",
        f"upstream mlflow-model-{name} " + "{",
        "    least_conn;",
        *servers,
        "    keepalive 16;",
        "    # uvicorn closes a connection idle for 5 s: nginx lets go of it first.",
        "    keepalive_timeout 4s;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def location_conf(name):
    """/models/NAME/{invocations,ping,version}, each allowed only when MLflow itself says the
    caller may read the registered model (the same users and permissions as the registry)."""
    out = [f"# Written by mlflow-models: model {name}; do not edit."]
    for path in ("invocations", "ping", "version"):
        out += [
            f"location = /models/{name}/{path} " + "{",
            f"    auth_request /_mlflow-model-auth/{name};",
            f"    access_log {NGINX_LOG_DIR}/mlflow-model-{name}.log combined;",
            f"    proxy_pass http://mlflow-model-{name}/{path};",
            "}",
        ]
    out += [
        f"location = /_mlflow-model-auth/{name} " + "{",
        "    internal;",
        "    proxy_method GET;",
        "    proxy_pass_request_body off;",
        # proxy_set_header here replaces every inherited one: Host is needed again.
        '    proxy_set_header Content-Length "";',
        '    proxy_set_header Content-Type "";',
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $host;",
        "    access_log off;",
        f"    proxy_pass http://mlflow/api/2.0/mlflow/registered-models/get?name={name};",
        "}",
    ]
    return "\n".join(out) + "\n"


def upstream_ports(text):
    return [int(port) for port in re.findall(r"server 127\.0\.0\.1:(\d+)", text)]


def free_ports(count, taken, is_free):
    ports = []
    for port in range(FIRST_PORT, LAST_PORT + 1):
        if port not in taken and is_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise Failure(f"no {count} free ports from {FIRST_PORT} to {LAST_PORT}")


# --------------------------------------------------------------------------- the host


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise Failure(f"`{' '.join(argv)}` exited {result.returncode}: {output}")
    return result


def read(path, default=""):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return default


def write(path, text, mode=0o644):
    """Atomically; True when the content changed."""
    if read(path, None) == text:
        return False
    tmp = path + ".kit-new"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def remove(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def put_back(old_files):
    """Files as they were: {path: text, or None for a file that did not exist}."""
    for path, text in old_files.items():
        if text is None:
            remove(path)
        else:
            write(path, text)


def journal(unit, lines=JOURNAL_LINES):
    return run(
        ["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"], check=False
    ).stdout.strip()


def unit_state(unit):
    out = run(
        ["systemctl", "show", "-p", "ActiveState", "-p", "UnitFileState", "-p", "NRestarts", unit],
        check=False,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def admin():
    env = parse_env_file(read(ENV_FILE))
    return env.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), env.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")


def api(path, params):
    """GET the tracking server's REST API through nginx on loopback, as the admin."""
    username, password = admin()
    url = f"{TRACKING}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url)  # noqa: S310 - https://127.0.0.1, this host's nginx
    token = base64.b64encode((f"{username}:{password}").encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    context = ssl.create_default_context()
    # Loopback to this host's own nginx, whose certificate names the public host.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:  # noqa: S310 - https://127.0.0.1
            return json.load(response)
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")[:500]
        raise Failure(f"the tracking server answered {error.code} to {path}: {body}") from None
    except OSError as error:
        raise Failure(f"the tracking server did not answer {path}: {error}") from None


def resolve(name, alias=None, version=None):
    if alias:
        found = api("registered-models/alias", {"name": name, "alias": alias})
    else:
        found = api("model-versions/get", {"name": name, "version": version})
    return found["model_version"]


DOWNLOAD = """
import json, os, sys, warnings
given = json.load(sys.stdin)
os.environ.update(given["env"])
os.environ.update(MLFLOW_TRACKING_URI=given["uri"], MLFLOW_TRACKING_INSECURE_TLS="true",
                  MLFLOW_TRACKING_USERNAME=given["username"], MLFLOW_TRACKING_PASSWORD=given["password"])
warnings.filterwarnings("ignore")
import mlflow.artifacts
mlflow.artifacts.download_artifacts(artifact_uri=given["model_uri"], dst_path=given["dst"])
"""


def ensure_model(name, version):
    """The version's files under MODELS_DIR/NAME/VERSION, downloaded once (as the mlflow user,
    the credentials on its stdin), then owned by root and read-only to everyone else."""
    target = os.path.join(MODELS_DIR, name, version)
    if os.path.exists(os.path.join(target, COMPLETE)):
        return target, False
    staging = os.path.join(MODELS_DIR, name, f".{version}.download")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(staging, mode=0o755)
    shutil.chown(staging, USER, USER)
    username, password = admin()
    env = {k: v for k, v in parse_env_file(read(ENV_FILE)).items() if not SERVER_ONLY.match(k)}
    given = {
        "env": env,
        "uri": TRACKING,
        "username": username,
        "password": password,
        "model_uri": f"models:/{name}/{version}",
        "dst": staging,
    }
    result = subprocess.run(
        [sys.executable, "-c", DOWNLOAD],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        user=USER,
        group=USER,
        extra_groups=[],
        umask=0o022,
        cwd=STATE_DIR,
        env=clean_env(),
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(
            f"model {name} version {version} could not be downloaded:\n{result.stderr.strip()[-2000:]}"
        )
    if not os.path.exists(os.path.join(staging, "MLmodel")):
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(f"model {name} version {version} has no MLmodel file: not an MLflow model")
    run(["chown", "-R", "root:root", staging])
    run(["chmod", "-R", "u+rwX,go+rX,go-w", staging])
    open(os.path.join(staging, COMPLETE), "w").close()
    os.replace(staging, target)
    return target, True


def clean_env():
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": STATE_DIR,
        "LANG": "C.UTF-8",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


def model_requirements(model_dir):
    import yaml

    python_env = os.path.join(model_dir, "python_env.yaml")
    if os.path.exists(python_env):
        with open(python_env) as handle:
            python_version = str(yaml.safe_load(handle)["python"])
    else:
        with open(os.path.join(model_dir, "MLmodel")) as handle:
            flavors = yaml.safe_load(handle)["flavors"]
        python_version = str(flavors["python_function"]["python_version"])
    requirements = requirement_lines(read(os.path.join(model_dir, "requirements.txt")))
    return python_version, requirements


def ensure_env(model_dir):
    """The interpreter the model runs on, and whether one was built: the server's environment
    when it already meets the model's requirements, else a conda environment built once per
    requirement set (as the mlflow user; then owned by root)."""
    python_version, requirements = model_requirements(model_dir)
    if satisfied_by_running_python(python_version, requirements):
        return os.path.join(os.path.realpath(CURRENT_ENV), "bin", "python"), ""
    text = environment_yml(python_version, requirements)
    name = env_name(text)
    home = os.path.join(ENVS_DIR, name)
    python = os.path.join(home, "env", "bin", "python")
    if os.path.exists(os.path.join(home, COMPLETE)):
        return python, ""
    if os.path.exists(home + FAILED):
        raise Failure(
            f"its environment {name} failed to build before (fab serve-model tries again):\n{read(home + FAILED)}"
        )
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home, mode=0o755)
    write(os.path.join(home, "environment.yml"), text)
    shutil.chown(home, USER, USER)
    ca = {
        k: CA_BUNDLE
        for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CONDA_SSL_VERIFY")
    }
    print(
        f"building environment {name} (python {python_version}, {len(requirements)} requirements)",
        flush=True,
    )
    result = subprocess.run(
        [
            CONDA,
            "env",
            "create",
            "--quiet",
            "--prefix",
            os.path.join(home, "env"),
            "--file",
            os.path.join(home, "environment.yml"),
        ],
        capture_output=True,
        text=True,
        user=USER,
        group=USER,
        extra_groups=[],
        umask=0o022,
        cwd=STATE_DIR,
        env={**clean_env(), **ca},
    )
    if result.returncode != 0:
        error = (result.stderr.strip() or result.stdout.strip())[-3000:]
        shutil.rmtree(home, ignore_errors=True)
        write(home + FAILED, error + "\n")
        raise Failure(
            f"its environment {name} could not be built (conda env create exited {result.returncode}):\n{error}"
        )
    run(["chown", "-R", "root:root", home])
    run(["chmod", "-R", "go-w", home])
    open(os.path.join(home, COMPLETE), "w").close()
    return python, name


# --------------------------------------------------------------------------- instances


def instances():
    """{unit: drop-in values} of every model instance the kit created."""
    found = {}
    for entry in os.listdir(SYSTEMD_DIR):
        if entry.startswith("mlflow-model@") and entry.endswith(".service.d"):
            unit = entry[: -len(".d")]
            if parse_instance(unit):
                found[unit] = parse_dropin(read(os.path.join(SYSTEMD_DIR, entry, "kit.conf")))
    return found


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def healthy(port):
    try:
        url = f"http://127.0.0.1:{port}/ping"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False


def wait_healthy(units):
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    pending = dict(units)
    while pending:
        for unit, port in list(pending.items()):
            if healthy(port):
                del pending[unit]
            else:
                state = unit_state(unit)
                # A model that cannot load makes its process exit again and again.
                if (
                    state.get("ActiveState") == "failed"
                    or int(state.get("NRestarts") or 0) >= MAX_RESTARTS
                ):
                    raise Failure(
                        "{} does not start ({} restarts):\n{}".format(
                            unit, state.get("NRestarts"), journal(unit)
                        )
                    )
        if pending and time.monotonic() > deadline:
            unit = next(iter(pending))
            raise Failure(
                f"{unit} did not answer /ping within {HEALTH_TIMEOUT_S}s:\n{journal(unit)}"
            )
        if pending:
            time.sleep(1)


def connections(port):
    out = run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], check=False).stdout
    return len(out.splitlines())


def drain(ports):
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while any(connections(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.5)


def reload_nginx():
    run(["nginx", "-t", "-q"])
    if unit_state("nginx.service").get("ActiveState") == "active":
        run(["systemctl", "reload", "nginx"])


def start_instances(name, version, ports, python, model_dir, memory_mb, spec):
    units = {}
    for port in ports:
        unit = instance_unit(name, port)
        directory = os.path.join(SYSTEMD_DIR, unit + ".d")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        write(
            os.path.join(directory, "kit.conf"),
            dropin(name, version, port, python, model_dir, memory_mb, spec),
        )
        units[unit] = port
    run(["systemctl", "daemon-reload"])
    for unit in units:
        run(["systemctl", "reset-failed", unit], check=False)
        run(["systemctl", "enable", "--now", unit])
    return units


def stop_instances(units):
    for unit in units:
        run(["systemctl", "disable", "--now", unit], check=False)
        run(["systemctl", "reset-failed", unit], check=False)
        shutil.rmtree(os.path.join(SYSTEMD_DIR, unit + ".d"), ignore_errors=True)
    if units:
        run(["systemctl", "daemon-reload"])


def converge(endpoint, present, unit_text):
    """One endpoint: what changed ("" when nothing), or a Failure with nothing running touched."""
    name, workers, memory_mb = endpoint["name"], endpoint["workers"], endpoint["memory_mb"]
    if endpoint.get("follow"):
        version = str(resolve(name, alias=endpoint["alias"])["version"])
    else:
        version = str(endpoint["version"])
    model_dir, downloaded = ensure_model(name, version)
    python, built = ensure_env(model_dir)
    spec = spec_digest(model_dir, python, memory_mb, unit_text)
    upstream_path = os.path.join(NGINX_DIR, name + ".upstream.conf")
    location_path = os.path.join(NGINX_DIR, name + ".location.conf")
    live = upstream_ports(read(upstream_path))
    mine = {unit: values for unit, values in present.items() if parse_instance(unit)[0] == name}
    live_units = [instance_unit(name, port) for port in live]
    done = []
    if len(live) == workers and all(
        mine.get(unit, {}).get("KIT_MODEL_SPEC") == spec for unit in live_units
    ):
        for unit in live_units:
            state = unit_state(unit)
            if state.get("UnitFileState") != "enabled" or state.get("ActiveState") != "active":
                run(["systemctl", "reset-failed", unit], check=False)
                run(["systemctl", "enable", unit])
                run(["systemctl", "restart", unit])
                done.append(f"restarted {unit}")
        if done:
            wait_healthy({unit: parse_instance(unit)[1] for unit in live_units})
        if write(location_path, location_conf(name)):
            reload_nginx()
            done.append("nginx location")
        leftovers = [unit for unit in mine if unit not in live_units]
        stop_instances(leftovers)
        done += [f"removed {unit}" for unit in leftovers]
        return version, ", ".join(done)
    # Blue/green: the new instances beside the old ones, nginx switched, the old drained.
    taken = {parse_instance(unit)[1] for unit in present}
    ports = free_ports(workers, taken, port_is_free)
    new = start_instances(name, version, ports, python, model_dir, memory_mb, spec)
    try:
        wait_healthy(new)
        old_files = {path: read(path, None) for path in (upstream_path, location_path)}
        write(upstream_path, upstream_conf(name, version, ports))
        write(location_path, location_conf(name))
        try:
            reload_nginx()
        except Failure:
            put_back(old_files)
            raise
    except Failure:
        stop_instances(list(new))
        raise
    old = [unit for unit in mine if unit not in new]
    drain([parse_instance(unit)[1] for unit in old])
    stop_instances(old)
    what = "version {} on {}".format(version, ", ".join(str(p) for p in ports))
    if built:
        what += f" (environment {built} built)"
    elif downloaded:
        what += " (downloaded)"
    if old:
        what += ", replaced {}".format(", ".join(sorted(old)))
    return version, what


def withdraw(name, present):
    """An endpoint no longer desired: out of nginx, drained, stopped; or a Failure with its
    nginx files put back and its instances still serving."""
    paths = [
        os.path.join(NGINX_DIR, name + suffix) for suffix in (".location.conf", ".upstream.conf")
    ]
    old_files = {path: read(path, None) for path in paths}
    if any([remove(path) for path in paths]):
        try:
            reload_nginx()
        except Failure:
            put_back(old_files)
            raise
    units = [unit for unit in present if parse_instance(unit)[0] == name]
    drain([parse_instance(unit)[1] for unit in units])
    stop_instances(units)
    return f"withdrawn ({len(units)} instance(s) stopped)"


def prune(present):
    """Model versions and environments no instance uses any more."""
    used_dirs = {values.get("__pyfunc_model_path__") for values in present.values()}
    used_envs = {
        values.get("KIT_MODEL_PYTHON", "").split("/env/bin/")[0] for values in present.values()
    }
    removed = []
    for name in os.listdir(MODELS_DIR) if os.path.isdir(MODELS_DIR) else ():
        for version in os.listdir(os.path.join(MODELS_DIR, name)):
            path = os.path.join(MODELS_DIR, name, version)
            if path not in used_dirs:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"model {name}/{version}")
        if not os.listdir(os.path.join(MODELS_DIR, name)):
            os.rmdir(os.path.join(MODELS_DIR, name))
    for entry in os.listdir(ENVS_DIR) if os.path.isdir(ENVS_DIR) else ():
        path = os.path.join(ENVS_DIR, entry)
        if os.path.isdir(path) and path not in used_envs:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"environment {entry}")
    return removed


def follow_timer(wanted):
    """The follow timer runs only while some endpoint follows its alias."""
    state = unit_state(TIMER)
    running = state.get("UnitFileState") == "enabled" and state.get("ActiveState") == "active"
    if wanted and not running:
        run(["systemctl", "enable", "--now", TIMER])
        return "follow timer on"
    if not wanted and state.get("UnitFileState") == "enabled":
        run(["systemctl", "disable", "--now", TIMER])
        return "follow timer off"
    return ""


def reconcile():
    desired = json.loads(read(DESIRED) or '{"endpoints": []}')["endpoints"]
    unit_text = read(UNIT_FILE)
    os.makedirs(NGINX_DIR, mode=0o755, exist_ok=True)
    summary = {"changed": {}, "ok": {}, "failed": {}}
    for endpoint in desired:
        name = endpoint["name"]
        if not NAME.fullmatch(name):
            summary["failed"][name] = "not a name the kit serves"
            continue
        try:
            version, what = converge(endpoint, instances(), unit_text)
        except Failure as failure:
            summary["failed"][name] = str(failure)
            print(
                f"endpoint {name}: FAILED, left as it was: {failure}", file=sys.stderr, flush=True
            )
            continue
        if what:
            summary["changed"][name] = what
            print(f"endpoint {name}: {what}", flush=True)
        else:
            summary["ok"][name] = f"version {version}, as wanted"
    wanted = {endpoint["name"] for endpoint in desired}
    present = instances()
    gone = sorted({parse_instance(unit)[0] for unit in present} - wanted)
    gone += sorted(
        entry.rsplit(".", 2)[0]
        for entry in os.listdir(NGINX_DIR)
        if entry.endswith(".location.conf")
        and entry.rsplit(".", 2)[0] not in wanted
        and entry.rsplit(".", 2)[0] not in gone
    )
    for name in gone:
        try:
            summary["changed"][name] = withdraw(name, present)
        except Failure as failure:
            summary["failed"][name] = str(failure)
            print(
                f"endpoint {name}: FAILED, left as it was: {failure}", file=sys.stderr, flush=True
            )
            continue
        print(f"endpoint {name}: {summary['changed'][name]}", flush=True)
    if not summary["failed"]:
        removed = prune(instances())
        if removed:
            summary["changed"]["(files)"] = "removed " + ", ".join(removed)
    timer = follow_timer(any(endpoint.get("follow") for endpoint in desired))
    if timer:
        summary["changed"]["(timer)"] = timer
    print("summary: " + json.dumps(summary, sort_keys=True), flush=True)
    return 1 if summary["failed"] else 0


def main(argv):
    if argv[:1] == ["reconcile"]:
        return reconcile()
    if argv[:1] == ["resolve"] and len(argv) == 4 and argv[2] in ("--alias", "--version"):
        name = argv[1]
        if not NAME.fullmatch(name):
            print(
                f"model name {name!r}: the kit serves names of letters, digits and _.-",
                file=sys.stderr,
            )
            return 2
        try:
            found = resolve(name, **{argv[2][2:]: argv[3]})
        except Failure as failure:
            print(str(failure), file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    "name": name,
                    "version": str(found["version"]),
                    "run_id": found.get("run_id", ""),
                    "status": found.get("status", ""),
                }
            )
        )
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
