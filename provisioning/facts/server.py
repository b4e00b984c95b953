"""Facts about the MLflow servers: their instances and environments, health through
nginx and per instance, metrics, the admin login, the KEK, HTTP from the host."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import quote

from provisioning.facts import Fact, parse_text

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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


#: /health as a load balancer sees it: through nginx from the host's own first address,
#: not loopback, so a drained host answers 503 ("000" when nothing answers).
BALANCER_HEALTH_CODE = Fact(
    "curl -sk -o /dev/null -w '%{http_code}' "
    "\"https://$(hostname -I | cut -d' ' -f1)/health\" || true",
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


def parse_age(text: str) -> int | None:
    return int(text) if text.strip().lstrip("-").isdigit() else None


def age_seconds(path: str) -> Fact[int | None]:
    """Seconds since ``path`` was last modified (None when it does not exist)."""
    quoted = shlex.quote(path)
    return Fact(
        f"test -e {quoted} && echo $(( $(date +%s) - $(stat -c %Y {quoted}) )) || echo none",
        parse_age,
        sudo=False,
    )


def user_changes(unit: str) -> Fact[str]:
    """The last line the unit's current run logged about hearing user changes (kit_auth:
    listening, or unheard and why); "" when it logged neither."""
    from provisioning.artifact_streaming import kit_auth

    pattern = shlex.quote(f"{kit_auth.LISTENING_MESSAGE}|{kit_auth.UNHEARD_MESSAGE}")
    invocation = f"$(systemctl show -p InvocationID --value {shlex.quote(unit)})"
    return Fact(
        f"journalctl _SYSTEMD_INVOCATION_ID={invocation} -o cat --no-pager 2>/dev/null"
        f" | grep -E {pattern} | tail -n 1",
        parse_text,
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


def parse_http(text: str) -> tuple[str, str]:
    """curl's body then ``-w '\\n%{http_code}'`` -> (status, body); status 000: no answer
    (the body is then curl's own error)."""
    body, _, code = text.rstrip("\n").rpartition("\n")
    return code.strip(), body


def https_get(url: str) -> Fact[tuple[str, str]]:
    """(status, body) of a GET from the host, trusting the host's CAs (10 s at most)."""
    return Fact(
        f"curl -sS --max-time 10 -w '\\n%{{http_code}}' {shlex.quote(url)} 2>&1 || true",
        parse_http,
        sudo=False,
    )


def https_post_config(url: str) -> Fact[tuple[str, str]]:
    """(status, body) of a POST from the host whose credentials and form come as a curl
    config on stdin (``user = ...``, ``data = ...``), never on the command line."""
    return Fact(
        f"curl -sS --max-time 10 -K - -w '\\n%{{http_code}}' {shlex.quote(url)} 2>&1 || true",
        parse_http,
        sudo=False,
    )
