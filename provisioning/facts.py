"""Reading host state: each fact is a command plus a pure parser, tested on recorded output.

A fact's command exits 0 whenever it can read what it asks for (absence is an
answer, not an error), so ``Host.read`` treats any other exit as a failure of
the host. Steps read facts first and change only what differs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    command: str
    parse: Callable[[str], T]
    #: Read as root (most of the kit's state is not readable by the login user).
    sudo: bool = True


# --------------------------------------------------------------------------- parsers


def parse_yes(text: str) -> bool:
    return text.strip() == "yes"


def parse_text(text: str) -> str:
    return text.strip()


def parse_words(text: str) -> list[str]:
    return text.split()


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


@dataclass(frozen=True)
class Resources:
    cores: int
    memory_mb: int
    free_disk_mb: int


def parse_resources(text: str) -> Resources:
    """nproc, MemTotal (kB), free kB on /, and the cgroup memory limit (bytes or ``max``).

    A container's /proc/meminfo shows the machine's memory; its limit is the cgroup's
    (memory.max on cgroup v2, memory.limit_in_bytes on v1, a huge number when unlimited).
    """
    words = text.split()
    cores, mem_kb, disk_kb = (int(v) for v in words[:3])
    memory_mb = mem_kb // 1024
    if len(words) > 3 and words[3].isdigit():
        memory_mb = min(memory_mb, int(words[3]) // (1024 * 1024))
    return Resources(cores, memory_mb, disk_kb // 1024)


def parse_installed_packages(text: str) -> set[str]:
    """Packages dpkg reports as ``installed`` (not merely known or half-configured)."""
    installed = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "installed":
            installed.add(parts[0].split(":")[0])
    return installed


@dataclass(frozen=True)
class Instance:
    """One mlflow-server@PORT unit and, when it runs, what its process was started with."""

    port: int
    state: str
    pid: int = 0
    #: The interpreter the process runs (``/opt/mlflow/envs/<name>/bin/python``).
    interpreter: str = ""
    #: MLFLOW_KIT_CONFIG in the process's environment (the config digest it started with).
    config: str = ""

    def environment(self, envs_dir: str) -> str:
        """The name of the environment the process runs ("" when not one of ``envs_dir``)."""
        prefix = envs_dir.rstrip("/") + "/"
        if not self.interpreter.startswith(prefix):
            return ""
        return self.interpreter[len(prefix) :].split("/", 1)[0]


def parse_instances(text: str) -> dict[int, Instance]:
    """``UNIT STATE PID INTERPRETER CONFIG`` lines ("-" for unknown) -> {port: Instance}."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 5 or not parts[0].startswith("mlflow-server@"):
            continue
        port = parts[0].removeprefix("mlflow-server@").removesuffix(".service")
        if not port.isdigit() or not parts[2].isdigit():
            continue
        interpreter, config = (p if p != "-" else "" for p in parts[3:5])
        found[int(port)] = Instance(int(port), parts[1], int(parts[2]), interpreter, config)
    return found


def parse_environment_versions(text: str) -> dict[str, str]:
    """``.../envs/<name>/lib/python3.X/site-packages/mlflow-<version>.dist-info`` -> {name: version}."""
    versions = {}
    for line in text.split():
        parts = line.rstrip("/").split("/")
        if len(parts) > 6 and parts[-1].startswith("mlflow-") and parts[-1].endswith(".dist-info"):
            versions[parts[-5]] = parts[-1].removeprefix("mlflow-").removesuffix(".dist-info")
    return versions


def parse_systemctl_show(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


@dataclass(frozen=True)
class FileState:
    exists: bool
    sha256: str = ""
    mode: str = ""
    owner: str = ""
    group: str = ""


def parse_file_state(output: str) -> FileState:
    """Parse ``stat -c '%a %U %G'`` then ``sha256sum`` output; ``missing`` when absent."""
    text = output.strip()
    if not text or text == "missing":
        return FileState(exists=False)
    lines = text.splitlines()
    mode, owner, group = lines[0].split()
    digest = lines[1].split()[0] if len(lines) > 1 else ""
    return FileState(True, digest, mode.zfill(4), owner, group)


@dataclass(frozen=True)
class PathState:
    """Mode (octal digits as stat prints them), owner and group of a path, or absent."""

    exists: bool
    mode: str = ""
    owner: str = ""
    group: str = ""


def parse_path_state(text: str) -> PathState:
    words = text.split()
    if len(words) != 3:
        return PathState(exists=False)
    return PathState(True, *words)


def parse_cloud_init_status(text: str) -> str:
    """``cloud-init status`` -> running, done, error, disabled, ... ("" without cloud-init)."""
    for line in text.splitlines():
        if line.startswith("status:"):
            return line.partition(":")[2].strip()
    return ""


def parse_processes(text: str) -> list[tuple[int, str]]:
    """``PID NAME`` lines -> [(pid, name)]."""
    found = []
    for line in text.splitlines():
        pid, _, name = line.strip().partition(" ")
        if pid.isdigit():
            found.append((int(pid), name.strip()))
    return found


def parse_json_output(text: str):
    """A program's answer: its last line of output, as JSON (None when it printed nothing)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def parse_json_file(text: str) -> dict:
    """A small JSON state file ({} when absent or unreadable)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MetricsSummary:
    """What the metrics endpoint says, in short: requests per instance and the kit's counts."""

    #: instance port -> requests it served since it started (mlflow_http_request_total).
    requests: dict[int, float]
    #: mlflow_kit_* gauge -> value (labelled ones summed: runs of every lifecycle stage).
    counts: dict[str, float]
    #: instance port -> whether it answered.
    up: dict[int, bool]


def parse_metrics(text: str) -> MetricsSummary:
    """Prometheus text exposition from mlflow-metrics -> MetricsSummary."""
    requests: dict[int, float] = {}
    counts: dict[str, float] = {}
    up: dict[int, bool] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        name, labels, value = (
            match.group(1),
            dict(_LABEL.findall(match.group(2) or "")),
            match.group(3),
        )
        try:
            number = float(value)
        except ValueError:
            continue
        port = labels.get("instance_port", "")
        if name == "mlflow_http_request_total" and port.isdigit():
            requests[int(port)] = requests.get(int(port), 0.0) + number
        elif name == "mlflow_kit_instance_up" and port.isdigit():
            up[int(port)] = number == 1
        elif name.startswith("mlflow_kit_"):
            key = name.removeprefix("mlflow_kit_")
            if labels.get("lifecycle_stage"):
                key += f"_{labels['lifecycle_stage']}"
            counts[key] = counts.get(key, 0.0) + number
    return MetricsSummary(requests, counts, up)


# --------------------------------------------------------------------------- facts

OS_RELEASE = Fact("cat /etc/os-release", parse_os_release, sudo=False)
RESOURCES = Fact(
    "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; df -Pk / | awk 'NR==2 {print $4}'; "
    "cat /sys/fs/cgroup/memory.max 2>/dev/null"
    " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo max",
    parse_resources,
    sudo=False,
)
#: Whether the login user may run sudo without a password (asked without sudo).
PASSWORDLESS_SUDO = Fact("sudo -n true 2>/dev/null && echo yes || echo no", parse_yes, sudo=False)
#: Every mlflow-server@ unit with its state and, when running, what its main process was
#: started with: the environment's interpreter and the config digest in its environment.
INSTANCES = Fact(
    "systemctl list-units --all --plain --no-legend --no-pager 'mlflow-server@*' "
    "| while read -r unit _load active _rest; do "
    'pid=$(systemctl show -p MainPID --value "$unit"); exe=-; config=-; '
    'if [ "$pid" != 0 ] && [ -r "/proc/$pid/environ" ]; then '
    "exe=$(tr '\\0' '\\n' < /proc/$pid/cmdline | head -n 1); "
    "config=$(tr '\\0' '\\n' < /proc/$pid/environ | sed -n 's/^MLFLOW_KIT_CONFIG=//p'); fi; "
    'echo "$unit $active $pid ${exe:--} ${config:--}"; done; true',
    parse_instances,
)


CLOUD_INIT_STATUS = Fact("cloud-init status 2>/dev/null || true", parse_cloud_init_status)
#: apt's and dpkg's lock files: whoever has one open is installing or updating.
APT_LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
APT_LOCK_HOLDERS = Fact(
    "for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -qE ' -> ("
    + "|".join(APT_LOCKS)
    + ')$\' && echo "${p#/proc/} $(cat $p/comm 2>/dev/null)"; done; true',
    parse_processes,
)


def installed_packages(packages: tuple[str, ...]) -> Fact[set[str]]:
    names = " ".join(shlex.quote(p) for p in packages)
    return Fact(
        f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {names} 2>/dev/null || true",
        parse_installed_packages,
        sudo=False,
    )


def user_exists(name: str) -> Fact[bool]:
    return Fact(
        f"id -u {shlex.quote(name)} >/dev/null 2>&1 && echo yes || echo no", parse_yes, False
    )


def path_state(path: str) -> Fact[PathState]:
    q = shlex.quote(path)
    return Fact(f"stat -c '%a %U %G' {q} 2>/dev/null || echo missing", parse_path_state)


def file_state(path: str) -> Fact[FileState]:
    q = shlex.quote(path)
    return Fact(
        f"if [ -e {q} ]; then stat -c '%a %U %G' {q} && sha256sum {q}; else echo missing; fi",
        parse_file_state,
    )


def exists(path: str) -> Fact[bool]:
    return Fact(f"test -e {shlex.quote(path)} && echo yes || echo no", parse_yes)


def executable(path: str) -> Fact[bool]:
    return Fact(f"test -x {shlex.quote(path)} && echo yes || echo no", parse_yes)


def symlink_target(link: str) -> Fact[str]:
    """Where ``link`` points ("" when it is no symlink)."""
    return Fact(f"readlink {shlex.quote(link)} || true", parse_text)


def directory_listing(path: str) -> Fact[list[str]]:
    return Fact(f"ls {shlex.quote(path)} 2>/dev/null || true", parse_words)


def file_text(path: str) -> Fact[str]:
    """A file's content, stripped ("" when absent); for small files such as keys."""
    return Fact(f"cat {shlex.quote(path)} 2>/dev/null || true", parse_text)


def certificate_names(path: str) -> Fact[str]:
    """The subjectAltName extension of a PEM certificate as openssl prints it ("" if none)."""
    q = shlex.quote(path)
    return Fact(f"openssl x509 -in {q} -noout -ext subjectAltName 2>/dev/null || true", parse_text)


def unit_enabled(unit: str) -> Fact[str]:
    """``enabled``, ``disabled``, ... ("" for a unit systemd does not know)."""
    return Fact(f"systemctl is-enabled {unit} 2>/dev/null || true", parse_text, sudo=False)


def unit_active(unit: str) -> Fact[str]:
    return Fact(f"systemctl is-active {unit} || true", parse_text, sudo=False)


def unit_properties(unit: str, *names: str) -> Fact[dict[str, str]]:
    props = " ".join(f"-p {name}" for name in names)
    return Fact(f"systemctl show {props} {unit}", parse_systemctl_show, sudo=False)


def tcp_open(host: str, port: int) -> Fact[bool]:
    """Whether the host opens a TCP connection to ``host:port`` within 5 s."""
    return Fact(
        f"timeout 5 bash -c '</dev/tcp/{host}/{int(port)}' 2>/dev/null && echo yes || echo no",
        parse_yes,
        sudo=False,
    )


def instance_health(port: int) -> Fact[str]:
    """The HTTP status one instance's /health answers on loopback ("000" when nothing answers)."""
    return Fact(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://127.0.0.1:{int(port)}/health"
        " || true",
        parse_text,
        sudo=False,
    )


def upstream_connections(port: int) -> Fact[int]:
    """Established connections to one instance (from nginx), by ``ss``."""
    return Fact(
        f"ss -Htn state established '( dport = :{int(port)} )' | wc -l",
        lambda text: int(text.strip() or 0),
        sudo=False,
    )


def admin_login(username: str) -> Fact[str]:
    """The HTTP status MLflow answers a user looking itself up through nginx; the credentials
    come as a curl config on stdin ("000" when nothing answers)."""
    path = "/api/2.0/mlflow/users/get?username=" + quote(username, safe="")
    return Fact(
        f"curl -sk -o /dev/null -w '%{{http_code}}' -K - {shlex.quote('https://127.0.0.1' + path)}"
        " || true",
        parse_text,
        sudo=False,
    )


#: The HTTP status /health answers through nginx on the host ("000" when nothing answers).
HEALTH_CODE = Fact(
    "curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/health || true",
    parse_text,
    sudo=False,
)


def environment_versions(envs_dir: str) -> Fact[dict[str, str]]:
    """The MLflow version installed in each environment under ``envs_dir``."""
    return Fact(
        f"ls -d {envs_dir}/*/lib/python3*/site-packages/mlflow-*.dist-info 2>/dev/null || true",
        parse_environment_versions,
        sudo=False,
    )


def env_file_value(path: str, name: str) -> Fact[str]:
    """One double-quoted value of a systemd environment file ("" when absent)."""
    return Fact(f"sed -n 's/^{name}=\"\\(.*\\)\"$/\\1/p' {path} 2>/dev/null || true", parse_text)


def journal(units: str, lines: int, output: str = "short-iso") -> Fact[str]:
    """The last ``lines`` journal lines of ``units`` (``-u A -u B`` arguments)."""
    return Fact(
        f"journalctl {units} -n {int(lines)} --no-pager -o {output} 2>/dev/null || true",
        parse_text,
    )


def json_output(command: str) -> Fact:
    """A kit program's JSON answer (its last line of output)."""
    return Fact(command, parse_json_output)


def json_file(path: str) -> Fact[dict]:
    return Fact(f"cat {shlex.quote(path)} 2>/dev/null || true", parse_json_file)


def metrics(port: int) -> Fact[MetricsSummary]:
    """mlflow-metrics on loopback, summarized (nothing when it does not answer)."""
    return Fact(
        f"curl -s --max-time 20 http://127.0.0.1:{int(port)}/metrics || true",
        parse_metrics,
        sudo=False,
    )


@dataclass(frozen=True)
class ServiceAge:
    """A service's state, when it last started and when its newest input last changed."""

    state: str
    started: int
    newest_input: int

    @property
    def stale(self) -> bool:
        """Not running, or started before an input changed (it runs what it read then)."""
        return self.state != "active" or self.newest_input > self.started


def parse_service_age(text: str) -> ServiceAge:
    """``STATE @STARTED NEWEST`` (epoch seconds; ``@`` or ``0`` when never started)."""
    words = text.split()
    if len(words) != 3:
        return ServiceAge("unknown", 0, 0)
    started = words[1].lstrip("@")
    return ServiceAge(
        words[0],
        int(started) if started.isdigit() else 0,
        int(words[2]) if words[2].isdigit() else 0,
    )


def service_age(unit: str, inputs: tuple[str, ...]) -> Fact[ServiceAge]:
    """Whether ``unit`` runs and whether any of ``inputs`` (files, symlinks themselves)
    changed after it started."""
    paths = " ".join(shlex.quote(p) for p in inputs)
    return Fact(
        f"echo $(systemctl is-active {unit}) "
        f"$(systemctl show -P ActiveEnterTimestamp --timestamp=unix {unit}) "
        f"$(stat -c %Y {paths} 2>/dev/null | sort -n | tail -n 1)",
        parse_service_age,
    )


def kek_fingerprint(path: str) -> Fact[str]:
    """``sha256:<16 hex>`` of the KEK kept in ``path`` ("VERSION PASSPHRASE"), as backups
    record it; the passphrase goes through a pipe only ("" without a KEK)."""
    q = shlex.quote(path)
    return Fact(
        f"if [ -s {q} ]; then printf 'sha256:%.16s\\n' \"$(cut -d' ' -f2- {q} | tr -d '\\n' "
        f'| sha256sum)"; fi',
        parse_text,
    )


# --------------------------------------------------------------------------- model endpoints


@dataclass(frozen=True)
class ModelInstance:
    """One mlflow-model@NAME-PORT unit and, when it runs, what its process serves."""

    name: str
    port: int
    state: str
    pid: int = 0
    #: The model version's directory in the process's environment (``.../<name>/<version>``).
    model_path: str = ""
    #: The interpreter the process runs (a model environment's, or the server's).
    interpreter: str = ""
    uptime_s: int = 0

    @property
    def version(self) -> str:
        """The version the process loaded ("" when it does not run)."""
        return self.model_path.rstrip("/").rsplit("/", 1)[-1] if self.model_path else ""


def parse_model_instances(text: str) -> list[ModelInstance]:
    """``UNIT STATE PID MODEL_PATH INTERPRETER UPTIME`` lines ("-" for unknown)."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 6 or not parts[0].startswith("mlflow-model@"):
            continue
        instance = parts[0].removeprefix("mlflow-model@").removesuffix(".service")
        name, _, port = instance.rpartition("-")
        if not name or not port.isdigit() or not parts[2].isdigit():
            continue
        path, interpreter = (p if p != "-" else "" for p in parts[3:5])
        uptime = int(parts[5]) if parts[5].isdigit() else 0
        found.append(
            ModelInstance(name, int(port), parts[1], int(parts[2]), path, interpreter, uptime)
        )
    return sorted(found, key=lambda i: (i.name, i.port))


#: Every mlflow-model@ unit, with what its main process serves and for how long.
MODEL_INSTANCES = Fact(
    "now=$(date +%s); systemctl list-units --all --plain --no-legend --no-pager 'mlflow-model@*' "
    "| while read -r unit _load active _rest; do "
    'pid=$(systemctl show -p MainPID --value "$unit"); path=-; exe=-; up=-; '
    'if [ "$pid" != 0 ] && [ -r "/proc/$pid/environ" ]; then '
    "path=$(tr '\\0' '\\n' < /proc/$pid/environ | sed -n 's/^__pyfunc_model_path__=//p'); "
    "exe=$(tr '\\0' '\\n' < /proc/$pid/cmdline | head -n 1); "
    'since=$(systemctl show -p ActiveEnterTimestamp --value "$unit"); '
    'up=$(( now - $(date -d "$since" +%s) )); fi; '
    'echo "$unit $active $pid ${path:--} ${exe:--} ${up:--}"; done; true',
    parse_model_instances,
)


def parse_upstreams(text: str) -> dict[str, list[int]]:
    """``grep -H`` of the models' upstream files -> {name: [ports nginx sends to]}."""
    found: dict[str, list[int]] = {}
    for line in text.splitlines():
        path, _, rest = line.partition(":")
        name = path.rsplit("/", 1)[-1].removesuffix(".upstream.conf")
        port = rest.strip().removeprefix("server 127.0.0.1:").split(" ", 1)[0].rstrip(";")
        if path.endswith(".upstream.conf") and port.isdigit():
            found.setdefault(name, []).append(int(port))
    return found


def model_upstreams(directory: str) -> Fact[dict[str, list[int]]]:
    return Fact(
        f"grep -H 'server 127.0.0.1:' {shlex.quote(directory)}/*.upstream.conf 2>/dev/null || true",
        parse_upstreams,
    )


@dataclass(frozen=True)
class LastRequest:
    time: str
    status: str


def parse_last_requests(text: str) -> dict[str, LastRequest]:
    """``PATH LAST-LINE`` of each model's nginx access log (combined format) -> {name: ...}."""
    found = {}
    for line in text.splitlines():
        path, _, entry = line.partition(" ")
        name = path.rsplit("/", 1)[-1].removeprefix("mlflow-model-").removesuffix(".log")
        when = entry.partition("[")[2].partition("]")[0]
        status = entry.partition('" ')[2].split(" ", 1)[0]
        if when:
            found[name] = LastRequest(when, status)
    return found


def model_last_requests(log_dir: str) -> Fact[dict[str, LastRequest]]:
    return Fact(
        f"for f in {shlex.quote(log_dir)}/mlflow-model-*.log; do "
        '[ -s "$f" ] && echo "$f $(tail -n 1 "$f")"; done; true',
        parse_last_requests,
    )


def file_contains(path: str, text: str) -> Fact[bool]:
    """Whether the file holds ``text`` (a fixed string)."""
    return Fact(
        f"grep -qF -- {shlex.quote(text)} {shlex.quote(path)} 2>/dev/null && echo yes || echo no",
        parse_yes,
    )


def model_ping(name: str, *, with_credentials: bool) -> Fact[str]:
    """The HTTP status a model endpoint's /ping answers through nginx on the host; with
    credentials, they come as a curl config on stdin ("000" when nothing answers)."""
    url = shlex.quote(f"https://127.0.0.1/models/{name}/ping")
    login = " -K -" if with_credentials else ""
    return Fact(
        f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 30{login} {url} || true",
        parse_text,
        sudo=False,
    )


def parse_cursor(text: str) -> str:
    """The ``-- cursor: ...`` line ``journalctl --show-cursor`` ends with ("" when none)."""
    for line in reversed(text.splitlines()):
        if line.startswith("-- cursor: "):
            return line.removeprefix("-- cursor: ").strip()
    return ""


def journal_cursor(unit: str) -> Fact[str]:
    """Where the unit's journal ends now, to read what a run adds after it."""
    return Fact(
        f"journalctl -u {unit} -n 1 --show-cursor --no-pager -o cat 2>/dev/null || true",
        parse_cursor,
    )


def journal_after(unit: str, cursor: str, lines: int = 2000) -> Fact[str]:
    """The unit's journal lines after ``cursor`` (all of them when it is "")."""
    after = f" --after-cursor={shlex.quote(cursor)}" if cursor else ""
    return Fact(
        f"journalctl -u {unit}{after} --no-pager -o cat 2>/dev/null | head -n {int(lines)}",
        parse_text,
    )
