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

DESIRED = {{ paths.models_desired | tojson }}
MODELS_DIR = {{ paths.models_dir | tojson }}
ENVS_DIR = {{ paths.model_envs_dir | tojson }}
CURRENT_ENV = {{ paths.current_env | tojson }}
SERVER_ENVS_DIR = {{ paths.envs_dir | tojson }}
ENV_FILE = {{ paths.env_file | tojson }}
CONDA = {{ paths.conda_bin | tojson }}
UNIT_FILE = {{ paths.model_unit | tojson }}
SYSTEMD_DIR = {{ paths.systemd_dir | tojson }}
NGINX_DIR = {{ paths.nginx_models_dir | tojson }}
NGINX_LOG_DIR = {{ paths.nginx_log_dir | tojson }}
CA_BUNDLE = {{ paths.system_ca_bundle | tojson }}
STATE_DIR = {{ paths.state_dir | tojson }}
USER = {{ user | tojson }}
FIRST_PORT, LAST_PORT = {{ model_ports | tojson }}
TIMER = "mlflow-models.timer"
TRACKING = "https://127.0.0.1"
COMPLETE = ".kit-complete"
FAILED = ".kit-failed"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Server-only secrets a model download never needs.
SERVER_ONLY = re.compile(r"^(MLFLOW_BACKEND_STORE_URI|MLFLOW_FLASK_SERVER_SECRET_KEY|MLFLOW_CRYPTO_|MLFLOW_AUTH_)")
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
    return "mlflow-model@%s-%d.service" % (name, port)


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
            raise Failure("requirements.txt line %r: options and nested files are not supported" % line)
        lines.append(line)
    return lines


def environment_yml(python_version, requirements):
    """The conda environment for a model: its Python, then its requirements through pip.
    Its sha256 names the environment, so models with the same requirements share one."""
    out = ["channels:", "  - conda-forge", "  - nodefaults", "dependencies:",
           "  - python=%s" % python_version, "  - pip", "  - pip:"]
    out += ["      - %s" % json.dumps(line) for line in requirements]
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
    lines += ['Environment="%s=%s"' % (key, value) for key, value in env.items()]
    lines += ["MemoryHigh=%dM" % (memory_mb * 9 // 10), "MemoryMax=%dM" % memory_mb]
    return "\n".join(lines) + "\n"


def parse_dropin(text):
    values = {}
    for key, value in re.findall(r'^Environment="([^=]+)=(.*)"$', text, re.M):
        values[key] = value
    return values


def upstream_conf(name, version, ports):
    servers = "".join(
        "    server 127.0.0.1:%d max_fails=3 fail_timeout=10s;\n" % port for port in ports
    )
    return (
        "# Written by mlflow-models: model %s version %s; do not edit.\n"
        "upstream mlflow-model-%s {\n"
        "    least_conn;\n"
        "%s"
        "    keepalive 16;\n"
        "    # uvicorn closes a connection idle for 5 s: nginx lets go of it first.\n"
        "    keepalive_timeout 4s;\n"
        "}\n"
    ) % (name, version, name, servers)


def location_conf(name):
    """/models/NAME/{invocations,ping,version}, each allowed only when MLflow itself says the
    caller may read the registered model (the same users and permissions as the registry)."""
    out = ["# Written by mlflow-models: model %s; do not edit." % name]
    for path in ("invocations", "ping", "version"):
        out += [
            "location = /models/%s/%s {" % (name, path),
            "    auth_request /_mlflow-model-auth/%s;" % name,
            "    access_log %s/mlflow-model-%s.log combined;" % (NGINX_LOG_DIR, name),
            "    proxy_pass http://mlflow-model-%s/%s;" % (name, path),
            "}",
        ]
    out += [
        "location = /_mlflow-model-auth/%s {" % name,
        "    internal;",
        "    proxy_method GET;",
        "    proxy_pass_request_body off;",
        # proxy_set_header here replaces every inherited one: Host is needed again.
        '    proxy_set_header Content-Length "";',
        '    proxy_set_header Content-Type "";',
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $host;",
        "    access_log off;",
        "    proxy_pass http://mlflow/api/2.0/mlflow/registered-models/get?name=%s;" % name,
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
    raise Failure("no %d free ports from %d to %d" % (count, FIRST_PORT, LAST_PORT))


# --------------------------------------------------------------------------- the host


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise Failure("`%s` exited %d: %s" % (" ".join(argv), result.returncode,
                                               (result.stderr or result.stdout).strip()[-2000:]))
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


def journal(unit, lines=JOURNAL_LINES):
    return run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"],
               check=False).stdout.strip()


def unit_state(unit):
    out = run(["systemctl", "show", "-p", "ActiveState", "-p", "UnitFileState", "-p", "NRestarts", unit],
              check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def admin():
    env = parse_env_file(read(ENV_FILE))
    return env.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), env.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")


def api(path, params):
    """GET the tracking server's REST API through nginx on loopback, as the admin."""
    username, password = admin()
    url = "%s/api/2.0/mlflow/%s?%s" % (TRACKING, path, urllib.parse.urlencode(params))
    request = urllib.request.Request(url)
    token = base64.b64encode(("%s:%s" % (username, password)).encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    context = ssl.create_default_context()
    # Loopback to this host's own nginx, whose certificate names the public host.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")[:500]
        raise Failure("the tracking server answered %d to %s: %s" % (error.code, path, body)) from None
    except OSError as error:
        raise Failure("the tracking server did not answer %s: %s" % (path, error)) from None


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
    staging = os.path.join(MODELS_DIR, name, ".%s.download" % version)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(staging, mode=0o755)
    shutil.chown(staging, USER, USER)
    username, password = admin()
    env = {k: v for k, v in parse_env_file(read(ENV_FILE)).items() if not SERVER_ONLY.match(k)}
    given = {"env": env, "uri": TRACKING, "username": username, "password": password,
             "model_uri": "models:/%s/%s" % (name, version), "dst": staging}
    result = subprocess.run(
        [sys.executable, "-c", DOWNLOAD], input=json.dumps(given), capture_output=True, text=True,
        user=USER, group=USER, extra_groups=[], umask=0o022, cwd=STATE_DIR, env=clean_env(),
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure("model %s version %s could not be downloaded:\n%s"
                      % (name, version, result.stderr.strip()[-2000:]))
    if not os.path.exists(os.path.join(staging, "MLmodel")):
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure("model %s version %s has no MLmodel file: not an MLflow model" % (name, version))
    run(["chown", "-R", "root:root", staging])
    run(["chmod", "-R", "u+rwX,go+rX,go-w", staging])
    open(os.path.join(staging, COMPLETE), "w").close()
    os.replace(staging, target)
    return target, True


def clean_env():
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": STATE_DIR, "LANG": "C.UTF-8",
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


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
        raise Failure("its environment %s failed to build before (fab serve-model tries again):\n%s"
                      % (name, read(home + FAILED)))
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home, mode=0o755)
    write(os.path.join(home, "environment.yml"), text)
    shutil.chown(home, USER, USER)
    ca = {k: CA_BUNDLE for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CONDA_SSL_VERIFY")}
    print("building environment %s (python %s, %d requirements)" % (name, python_version, len(requirements)),
          flush=True)
    result = subprocess.run(
        [CONDA, "env", "create", "--quiet", "--prefix", os.path.join(home, "env"),
         "--file", os.path.join(home, "environment.yml")],
        capture_output=True, text=True, user=USER, group=USER, extra_groups=[], umask=0o022,
        cwd=STATE_DIR, env={**clean_env(), **ca},
    )
    if result.returncode != 0:
        error = (result.stderr.strip() or result.stdout.strip())[-3000:]
        shutil.rmtree(home, ignore_errors=True)
        write(home + FAILED, error + "\n")
        raise Failure("its environment %s could not be built (conda env create exited %d):\n%s"
                      % (name, result.returncode, error))
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
        with urllib.request.urlopen("http://127.0.0.1:%d/ping" % port, timeout=5) as response:
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
                if state.get("ActiveState") == "failed" or int(state.get("NRestarts") or 0) >= MAX_RESTARTS:
                    raise Failure("%s does not start (%s restarts):\n%s"
                                  % (unit, state.get("NRestarts"), journal(unit)))
        if pending and time.monotonic() > deadline:
            unit = next(iter(pending))
            raise Failure("%s did not answer /ping within %ds:\n%s" % (unit, HEALTH_TIMEOUT_S, journal(unit)))
        if pending:
            time.sleep(1)


def connections(port):
    out = run(["ss", "-Htn", "state", "established", "( dport = :%d )" % port], check=False).stdout
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
        write(os.path.join(directory, "kit.conf"),
              dropin(name, version, port, python, model_dir, memory_mb, spec))
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
    if (
        len(live) == workers
        and all(mine.get(unit, {}).get("KIT_MODEL_SPEC") == spec for unit in live_units)
    ):
        for unit in live_units:
            state = unit_state(unit)
            if state.get("UnitFileState") != "enabled" or state.get("ActiveState") != "active":
                run(["systemctl", "reset-failed", unit], check=False)
                run(["systemctl", "enable", unit])
                run(["systemctl", "restart", unit])
                done.append("restarted %s" % unit)
        if done:
            wait_healthy({unit: parse_instance(unit)[1] for unit in live_units})
        if write(location_path, location_conf(name)):
            reload_nginx()
            done.append("nginx location")
        leftovers = [unit for unit in mine if unit not in live_units]
        stop_instances(leftovers)
        done += ["removed %s" % unit for unit in leftovers]
        return version, ", ".join(done)
    # Blue/green: the new instances beside the old ones, nginx switched, the old drained.
    taken = {parse_instance(unit)[1] for unit in present}
    ports = free_ports(workers, taken, port_is_free)
    new = start_instances(name, version, ports, python, model_dir, memory_mb, spec)
    try:
        wait_healthy(new)
        old_upstream, old_location = read(upstream_path, None), read(location_path, None)
        write(upstream_path, upstream_conf(name, version, ports))
        write(location_path, location_conf(name))
        try:
            reload_nginx()
        except Failure:
            for path, text in ((upstream_path, old_upstream), (location_path, old_location)):
                write(path, text) if text is not None else remove(path)
            raise
    except Failure:
        stop_instances(list(new))
        raise
    old = [unit for unit in mine if unit not in new]
    drain([parse_instance(unit)[1] for unit in old])
    stop_instances(old)
    what = "version %s on %s" % (version, ", ".join(str(p) for p in ports))
    if built:
        what += " (environment %s built)" % built
    elif downloaded:
        what += " (downloaded)"
    if old:
        what += ", replaced %s" % ", ".join(sorted(old))
    return version, what


def withdraw(name, present):
    """An endpoint no longer desired: out of nginx, drained, stopped."""
    paths = [os.path.join(NGINX_DIR, name + suffix) for suffix in (".location.conf", ".upstream.conf")]
    if any([remove(path) for path in paths]):
        reload_nginx()
    units = [unit for unit in present if parse_instance(unit)[0] == name]
    drain([parse_instance(unit)[1] for unit in units])
    stop_instances(units)
    return "withdrawn (%d instance(s) stopped)" % len(units)


def prune(present):
    """Model versions and environments no instance uses any more."""
    used_dirs = {values.get("__pyfunc_model_path__") for values in present.values()}
    used_envs = {values.get("KIT_MODEL_PYTHON", "").split("/env/bin/")[0] for values in present.values()}
    removed = []
    for name in os.listdir(MODELS_DIR) if os.path.isdir(MODELS_DIR) else ():
        for version in os.listdir(os.path.join(MODELS_DIR, name)):
            path = os.path.join(MODELS_DIR, name, version)
            if path not in used_dirs:
                shutil.rmtree(path, ignore_errors=True)
                removed.append("model %s/%s" % (name, version))
        if not os.listdir(os.path.join(MODELS_DIR, name)):
            os.rmdir(os.path.join(MODELS_DIR, name))
    for entry in os.listdir(ENVS_DIR) if os.path.isdir(ENVS_DIR) else ():
        path = os.path.join(ENVS_DIR, entry)
        if os.path.isdir(path) and path not in used_envs:
            shutil.rmtree(path, ignore_errors=True)
            removed.append("environment %s" % entry)
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
            print("endpoint %s: FAILED, left as it was: %s" % (name, failure), file=sys.stderr, flush=True)
            continue
        if what:
            summary["changed"][name] = what
            print("endpoint %s: %s" % (name, what), flush=True)
        else:
            summary["ok"][name] = "version %s, as wanted" % version
    wanted = {endpoint["name"] for endpoint in desired}
    present = instances()
    gone = sorted({parse_instance(unit)[0] for unit in present} - wanted)
    gone += sorted(
        entry.rsplit(".", 2)[0] for entry in os.listdir(NGINX_DIR)
        if entry.endswith(".location.conf") and entry.rsplit(".", 2)[0] not in wanted
        and entry.rsplit(".", 2)[0] not in gone
    )
    for name in gone:
        summary["changed"][name] = withdraw(name, present)
        print("endpoint %s: %s" % (name, summary["changed"][name]), flush=True)
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
            print("model name %r: the kit serves names of letters, digits and _.-" % name, file=sys.stderr)
            return 2
        try:
            found = resolve(name, **{argv[2][2:]: argv[3]})
        except Failure as failure:
            print(str(failure), file=sys.stderr)
            return 1
        print(json.dumps({"name": name, "version": str(found["version"]),
                          "run_id": found.get("run_id", ""), "status": found.get("status", "")}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
