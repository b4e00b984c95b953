"""The mlflow-server@PORT instances: how many, enabled, running, restarted when told."""

from __future__ import annotations

from provisioning import facts
from provisioning.handlers import Actions
from provisioning.layout import FIRST_SERVER_PORT, SERVER_UNIT_NAME
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host

MAX_INSTANCES = 8
#: Memory one single-worker instance needs, and what the rest of the VM keeps.
INSTANCE_MB = 400
RESERVED_MB = 512


def instances_for(resources: facts.Resources) -> int:
    """One single-worker server per core, as memory allows (about 400 MB each), 1 to 8.

    Separate single-worker processes behind nginx keep each upstream connection
    on its own socket: uvicorn with ``--workers`` above 1 shares one listening
    socket and adds about 40 ms per request on reused connections (DESIGN.md).
    """
    by_memory = max(1, (resources.memory_mb - RESERVED_MB) // INSTANCE_MB)
    return max(1, min(resources.cores, by_memory, MAX_INSTANCES))


def ports_for(deployment: Deployment, resources: facts.Resources) -> list[int]:
    """The loopback ports of the instances this host runs."""
    instances = deployment.server_instances or instances_for(resources)
    if deployment.job_execution:
        # MLflow's job runner schedules periodic jobs in every server process that runs
        # it; one instance keeps each job scheduled once.
        instances = 1
    return [FIRST_SERVER_PORT + i for i in range(instances)]


def unit(port: int) -> str:
    return SERVER_UNIT_NAME.replace("@", f"@{port}")


def converge(host: Host, ports: list[int], actions: Actions) -> Outcome[None]:
    """mlflow-server@PORT for exactly ``ports``: enabled, running, restarted if ``actions`` say so."""
    restart = actions.restarts(SERVER_UNIT_NAME)
    present = host.read(facts.SERVER_INSTANCES)
    done = []
    for port in sorted(set(present) - set(ports)):
        host.run(f"systemctl disable --now {unit(port)}")
        done.append(f"stopped {port}")
    for port in ports:
        name = unit(port)
        if host.read(facts.unit_enabled(name)) != "enabled":
            host.run(f"systemctl enable {name}")
            done.append(f"enabled {port}")
        if present.get(port) != "active":
            # A unit that hit its start limit stays failed until reset.
            host.run(f"systemctl reset-failed {name} 2>/dev/null || true")
            host.run(f"systemctl restart {name}")
            done.append(f"started {port}")
        elif restart:
            host.run(f"systemctl restart {name}")
            done.append(f"restarted {port}")
    if not done:
        return unchanged(f"{len(ports)} instance(s) running, nothing they read changed")
    return changed(", ".join(done))


def restart_all(host: Host) -> Outcome[None]:
    """Restart every instance present on the host."""
    instances = host.read(facts.SERVER_INSTANCES)
    if not instances:
        raise host.error(
            facts.SERVER_INSTANCES.command,
            1,
            "no mlflow-server@ units on this host: run fab bootstrap first",
        )
    units = " ".join(unit(port) for port in sorted(instances))
    host.run(f"systemctl reset-failed {units} 2>/dev/null || true")
    host.run(f"systemctl restart {units}")
    return changed(f"restarted {len(instances)} instance(s)")
