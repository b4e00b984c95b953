# Managed by fab serve-model: do not edit on the VM, edit templates/ in the kit.
"""mlflow-models' hands on this host: commands, files, units, the tracking server, the
model versions it downloads and the environments it builds for them.

Installed beside mlflow-models, which imports it by its plain module name.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from kit_models_files import (
    CA_BUNDLE,
    CONDA,
    CURRENT_ENV,
    ENV_FILE,
    ENVS_DIR,
    MODELS_DIR,
    STATE_DIR,
    USER,
    Failure,
    env_name,
    environment_yml,
    parse_env_file,
    requirement_lines,
    satisfied_by_running_python,
)

TRACKING = "https://127.0.0.1"
COMPLETE = ".kit-complete"
FAILED = ".kit-failed"
#: Server-only secrets a model download never needs.
SERVER_ONLY = re.compile(
    r"^(MLFLOW_BACKEND_STORE_URI|MLFLOW_FLASK_SERVER_SECRET_KEY|MLFLOW_CRYPTO_|MLFLOW_AUTH_)"
)
JOURNAL_LINES = 30


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
        # pip's --no-compile (PIP_NO_COMPILE=1 would mean --compile); compiled below.
        env={**clean_env(), **ca, "PIP_COMPILE": "0"},
    )
    if result.returncode != 0:
        error = (result.stderr.strip() or result.stdout.strip())[-3000:]
        shutil.rmtree(home, ignore_errors=True)
        write(home + FAILED, error + "\n")
        raise Failure(
            f"its environment {name} could not be built (conda env create exited {result.returncode}):\n{error}"
        )
    # One compileall on every core rather than pip's, file by file on one: the same .pyc
    # files, which the scoring servers' user cannot write once the environment is root's.
    # Files that do not compile stay without one, as pip leaves them.
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0",
         *glob.glob(os.path.join(home, "env", "lib", "python3*", "site-packages"))],
        capture_output=True, user=USER, group=USER, extra_groups=[], umask=0o022,
        cwd=STATE_DIR, env=clean_env(), check=False,
    )  # fmt: skip
    run(["chown", "-R", "root:root", home])
    run(["chmod", "-R", "go-w", home])
    open(os.path.join(home, COMPLETE), "w").close()
    return python, name
