"""Metrics: every instance's Prometheus metrics and the kit's counts, as /metrics.

Each ``mlflow-server@PORT`` runs with ``--expose-prometheus`` (its own directory,
emptied at every start). mlflow-metrics gathers them on 127.0.0.1 (each sample
labelled ``instance_port``) with the kit's counts; nginx serves it as /metrics to the
admin's credentials or metrics_allowed_cidrs (templates/nginx-mlflow.conf.j2).
"""

from __future__ import annotations

from provisioning import facts
from provisioning.layout import FILES, METRICS_PORT, METRICS_UNIT_NAME, PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.steps import backup, configuration
from provisioning.transport import Host

UNIT_FILES = ("mlflow-metrics.service.j2",)
PROGRAMS = ("kit_storage.py", "mlflow_metrics.py")
#: What the service reads at start besides its unit and program: a change restarts it.
INPUTS = (PATHS["env_file"], PATHS["current_env"])


def converge(host: Host, ctx: dict) -> Outcome[None]:
    """mlflow-metrics enabled and running what it should: its unit and program as
    installed, the current environment and the env file's configuration."""
    done = backup.install_programs(host, PROGRAMS)
    units = configuration.install_files(host, ctx, UNIT_FILES)
    done += [FILES[name].path for name in UNIT_FILES if name in units]
    if units:
        host.run("systemctl daemon-reload")
    if host.read(facts.unit_enabled(METRICS_UNIT_NAME)) != "enabled":
        host.run(f"systemctl enable {METRICS_UNIT_NAME}")
        done.append(f"enabled {METRICS_UNIT_NAME}")
    age = host.read(facts.service_age(METRICS_UNIT_NAME, INPUTS))
    if done or age.stale:
        host.run(f"systemctl restart {METRICS_UNIT_NAME}")
        done.append(f"restarted {METRICS_UNIT_NAME}")
    if not done:
        return unchanged(f"{METRICS_UNIT_NAME} on 127.0.0.1:{METRICS_PORT}, served as /metrics")
    return changed(", ".join(done))


def status_rows(host: Host) -> list[tuple[str, str]]:
    """Requests per instance and the kit's counts, for fab status."""
    summary = host.read(facts.metrics(METRICS_PORT))
    if not summary.up and not summary.counts:
        return [("metrics", f"{METRICS_UNIT_NAME} does not answer")]
    requests = ", ".join(f"{p}:{int(n)}" for p, n in sorted(summary.requests.items())) or "-"
    c = summary.counts

    def count(*keys: str) -> str:
        found = [c[k] for k in keys if k in c]
        return str(int(sum(found))) if found else "?"

    return [
        ("requests per instance", requests),
        (
            "counts",
            f"{count('experiments_active')} experiments, {count('runs_active')} runs "
            f"({count('runs_deleted')} deleted), {count('registered_models')} registered models, "
            f"{count('model_versions')} versions",
        ),
        (
            "storage",
            f"database {int(c.get('database_bytes', 0)) // 1024**2} MiB, "
            f"{count('artifact_objects')} artifact objects "
            f"({int(c.get('artifact_bytes', 0)) // 1024**2} MiB)",
        ),
    ]
