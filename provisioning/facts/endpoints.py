"""Facts about the model endpoints (fab serve-model): their units and what each process
serves, nginx's upstreams and last requests, a /ping through nginx, a unit's journal."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from provisioning.facts import Fact, parse_text, parse_yes


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
