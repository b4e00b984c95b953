"""Garbage collection: ``mlflow gc`` on a systemd timer, for runs deleted long enough ago.

mlflow-gc.timer starts mlflow-gc.service (gc_schedule); the service runs MLflow's own
``mlflow gc --older-than <gc_older_than>`` in /opt/mlflow/bin/mlflow-gc, which deletes
the runs' artifacts through the server and records what it did in
/var/lib/mlflow/gc-last.json. ``gc_enabled: false`` stops the timer and removes it.
"""

from __future__ import annotations

from provisioning import facts, files
from provisioning.layout import FILES, GC_TIMER_NAME, GC_UNIT_NAME, PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.steps import backup, configuration
from provisioning.transport import Host

UNIT_FILES = ("mlflow-gc.service.j2", "mlflow-gc.timer.j2")
PROGRAMS = ("kit_storage.py", "mlflow_gc.py")


def converge(host: Host, deployment: Deployment, ctx: dict) -> Outcome[None]:
    """The gc timer enabled and waiting, with the units and program as rendered; or, with
    gc_enabled false, no timer at all."""
    if not deployment.gc_enabled:
        return remove(host)
    done = backup.install_programs(host, PROGRAMS)
    units = configuration.install_files(host, ctx, UNIT_FILES)
    done += [FILES[name].path for name in UNIT_FILES if name in units]
    if units:
        host.run("systemctl daemon-reload")
    if host.read(facts.unit_enabled(GC_TIMER_NAME)) != "enabled":
        host.run(f"systemctl enable {GC_TIMER_NAME}")
        done.append(f"enabled {GC_TIMER_NAME}")
    active = host.read(facts.unit_active(GC_TIMER_NAME)) == "active"
    if not active or "mlflow-gc.timer.j2" in units:
        host.run(f"systemctl restart {GC_TIMER_NAME}")
        done.append(f"started {GC_TIMER_NAME}")
    if not done:
        return unchanged(
            f"{GC_TIMER_NAME} {deployment.gc_schedule}: runs deleted more than "
            f"{deployment.gc_older_than} ago"
        )
    return changed(", ".join(done))


def remove(host: Host) -> Outcome[None]:
    done = []
    if host.read(facts.unit_enabled(GC_TIMER_NAME)) not in ("", "not-found"):
        host.run(f"systemctl disable --now {GC_TIMER_NAME}")
        done.append(f"stopped {GC_TIMER_NAME}")
    for path in (PATHS["gc_timer"], PATHS["gc_unit"], PATHS["gc_program"]):
        if files.ensure_absent(host, path):
            done.append(f"removed {path}")
    if any(d.startswith("removed /etc/systemd") for d in done):
        host.run("systemctl daemon-reload")
    if not done:
        return unchanged("gc_enabled is false: no gc timer")
    return changed(", ".join(done))


def status_rows(host: Host, deployment: Deployment) -> list[tuple[str, str]]:
    """``gc`` and its last result, for fab status."""
    if not deployment.gc_enabled:
        return [("gc", "off (gc_enabled: false)")]
    timer = host.read(facts.unit_properties(GC_TIMER_NAME, "ActiveState", "NextElapseUSecRealtime"))
    last = host.read(facts.json_file(PATHS["gc_last"]))
    state = host.read(facts.unit_properties(GC_UNIT_NAME, "ActiveState"))
    rows = [
        (
            "gc timer",
            f"{timer.get('ActiveState') or 'missing'}, {deployment.gc_schedule}, older than "
            f"{deployment.gc_older_than}; next {timer.get('NextElapseUSecRealtime') or '-'}",
        )
    ]
    running = " (running again now)" if state.get("ActiveState") == "activating" else ""
    if last:
        outcome = last.get("result", "?")
        detail = (
            f"{last.get('runs', 0)} run(s), {last.get('logged_models', 0)} logged model(s) removed"
        )
        if outcome != "success":
            detail = last.get("error", "see journalctl -u mlflow-gc")
        rows.append(("gc last run", f"{outcome} at {last.get('finished', '?')}: {detail}{running}"))
    else:
        rows.append(("gc last run", "running now (the first time)" if running else "never"))
    return rows
