# Managed by fab serve-model: do not edit on the VM, edit templates/ in the kit.
"""mlflow-models' layout on this host and the files it writes and reads, as pure functions.

Installed beside mlflow-models, which imports it by its plain module name (as
kit_models_host does). Nothing here touches the host: the env file, the instances'
drop-ins, nginx's upstreams and locations, a model's requirements and the conda
environment built for them, the free ports.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys

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
#: How long nginx keeps MLflow's "yes, this caller may read the model" (a 200) per
#: credential: the check costs a registry lookup in MLflow (about 20 ms a request, against
#: about 3 ms for the prediction). A revoked permission or password stops working within it.
AUTH_CACHE_SECONDS = 10
#: Where nginx keeps those answers: /run is memory (tmpfs), the directory nginx's own (0700).
AUTH_CACHE_DIR = "/run/kit-model-auth-"


class Failure(Exception):
    """One endpoint could not be converged; the message is what the operator reads."""


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
        "# MLflow's permission answers for this model (location_conf), kept in memory.",
        f"proxy_cache_path {AUTH_CACHE_DIR}{name} levels=1 keys_zone=kit-model-auth-{name}:1m"
        " max_size=4m inactive=60s use_temp_path=off;",
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
        # Only a 200 is kept, per credential (basic or bearer, or the session's cookie):
        # a refusal is asked again every time, a request without either gets MLflow's 401.
        "    proxy_buffering on;",
        f"    proxy_cache kit-model-auth-{name};",
        '    proxy_cache_key "$http_authorization|$http_cookie";',
        f"    proxy_cache_valid 200 {AUTH_CACHE_SECONDS}s;",
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
