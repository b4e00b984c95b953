"""The mlflow-server@PORT instances: how many, running, and restarted one at a time.

An instance is restarted when what it runs differs from what it was started
with: its process's environment records the config digest (MLFLOW_KIT_CONFIG)
and its interpreter names the conda environment, so any later run converges,
also after an interrupted one. Restarts roll: nginx stops sending to the
instance (``down`` in the upstream file, a graceful reload), its connections
drain, it restarts, its own /health answers, and it rejoins. With a single
instance a surge instance serves meanwhile, so no request is turned away; unless the
host is a group's and drained out of its load balancer (provisioning.steps.drain): then
no request comes to it, and the lone instance restarts on its own.
"""

from __future__ import annotations

import shlex

from provisioning import facts, files, sizing, waiting
from provisioning.layout import FILES, FIRST_SERVER_PORT, PATHS, SERVER_UNIT_NAME
from provisioning.play import Outcome, changed, unchanged
from provisioning.render import render
from provisioning.settings import Deployment
from provisioning.steps import drain as balancer
from provisioning.steps.conda import COMPLETE_MARKER, Environment
from provisioning.transport import Host, PreflightError, RemoteError

#: The port of the temporary instance that serves while a lone instance restarts.
SURGE_PORT = FIRST_SERVER_PORT + 99
UPSTREAM = "nginx-upstream.conf.j2"
HEALTH_TIMEOUT_S = 180
#: Restarts by systemd (Restart=always, RestartSec=5s) while waiting for an instance's
#: /health: a crash loop, not a slow start.
CRASH_LOOP_RESTARTS = 3
DRAIN_TIMEOUT_S = 60
POLL_S = 1


def ports_for(deployment: Deployment, resources: facts.Resources) -> list[int]:
    """The loopback ports of the instances this host runs: one per core as memory and the
    database's connection limit allow, or the number the settings give (checked)."""
    connections = deployment.db_max_connections or sizing.DEFAULT_DB_MAX_CONNECTIONS
    hosts = deployment.group_size
    fits = sizing.instances_within(connections, deployment.job_execution, hosts)
    if deployment.job_execution:
        # MLflow's job runner schedules periodic jobs in every server process that runs
        # it; one instance keeps each job scheduled once.
        instances = 1
    elif deployment.server_instances:
        instances = deployment.server_instances
    else:
        instances = min(sizing.instances_for(resources.cores, resources.memory_mb), max(fits, 1))
    if instances > fits:
        group = (
            f" on each of the group's {hosts} hosts (a lone instance counts twice: its surge "
            "instance serves beside it while it restarts)"
            if hosts > 1
            else ""
        )
        raise PreflightError(
            f"db_max_connections {connections} cannot serve {instances} server instance(s)"
            f"{group}: each needs {sizing.least_per_instance(deployment.job_execution)} connections "
            f"and {sizing.DB_RESERVED_CONNECTIONS} stay free (at most {fits} instance(s))"
        )
    if FIRST_SERVER_PORT + instances > SURGE_PORT:
        raise PreflightError(f"{instances} instances would reach the surge port {SURGE_PORT}")
    return [FIRST_SERVER_PORT + i for i in range(instances)]


def unit(port: int) -> str:
    return SERVER_UNIT_NAME.replace("@", f"@{port}")


def converge(host: Host, ctx: dict, env: Environment) -> Outcome[None]:
    """Exactly the instances of ``ctx["server_ports"]``, enabled and running ``env`` with
    ``ctx["config_digest"]``; stale ones restarted one at a time, surplus ones drained and stopped.
    """
    ports, config = ctx["server_ports"], ctx["config_digest"]
    present = host.read(facts.INSTANCES)
    done = []
    for port in ports:
        if host.read(facts.unit_enabled(unit(port))) != "enabled":
            host.run(f"systemctl enable {unit(port)}")
            done.append(f"enabled {port}")
    down = [p for p in ports if present.get(p, facts.Instance(p, "")).state != "active"]
    for port in down:
        # A unit that hit its start limit stays failed until reset.
        host.run(f"systemctl reset-failed {unit(port)} 2>/dev/null || true")
        host.run(f"systemctl restart {unit(port)}")
        done.append(f"started {port}")
    for port in down:
        wait_healthy(host, port)
    stale = [
        p
        for p in ports
        if p not in down
        and (present[p].config != config or present[p].environment(PATHS["envs_dir"]) != env.name)
    ]
    # Instances no longer wanted, and a surge instance an interrupted restart left running.
    leftovers = [p for p, i in sorted(present.items()) if p not in ports and i.state == "active"]
    publish(host, ports + leftovers)
    if leftovers:
        publish(host, ports + leftovers, down=leftovers)
        for port in leftovers:
            drain(host, port)
            host.run(f"systemctl disable --now {unit(port)}")
            done.append(f"stopped {port}")
        publish(host, ports)
    for port in sorted(set(present) - set(ports) - set(leftovers) - {SURGE_PORT}):
        if host.read(facts.unit_enabled(unit(port))) == "enabled":
            host.run(f"systemctl disable {unit(port)}")
            done.append(f"disabled {port}")
    if stale:
        roll(host, ports, stale, grouped=ctx["group_size"] > 1)
        done += [f"restarted {p}" for p in stale]
    if not done:
        return unchanged(f"{len(ports)} instance(s) running what they were started with")
    return changed(", ".join(done))


def restart_all(host: Host, grouped: bool = False) -> Outcome[None]:
    """Restart every instance present, one at a time, without turning a request away
    (``grouped``: the host is one of a group's, behind its load balancer)."""
    ports = sorted(set(host.read(facts.INSTANCES)) - {SURGE_PORT})
    if not ports:
        raise host.error(
            facts.INSTANCES.command,
            1,
            "no mlflow-server@ units on this host: run fab bootstrap first",
        )
    roll(host, ports, ports, grouped)
    return changed(f"restarted {len(ports)} instance(s), one at a time")


def roll(host: Host, ports: list[int], restart: list[int], grouped: bool = False) -> None:
    """Restart ``restart`` (some of ``ports``) one at a time, each out of nginx meanwhile.

    A lone instance restarts behind a surge instance, unless the host is a group's
    (``grouped``) and out of its load balancer: a rolling bootstrap drains the host here,
    before its first restart, and the balancer then sends it nothing (the group's hosts
    take HTTPS only from their balancer, stacks/ingress.py)."""
    host.disrupting()
    surge = len(ports) == 1 and not (grouped and out_of_balancer(host))
    if len(ports) == 1 and not surge:
        host.note(f"out of the load balancer: {ports[0]} restarts without a surge instance")
    if surge:
        host.run(f"systemctl reset-failed {unit(SURGE_PORT)} 2>/dev/null || true")
        host.run(f"systemctl start {unit(SURGE_PORT)}")
        wait_healthy(host, SURGE_PORT)
    serving = ports + ([SURGE_PORT] if surge else [])
    for port in restart:
        host.note(f"restarting {port}: out of nginx, draining")
        publish(host, serving, down=[port])
        drain(host, port)
        host.run(f"systemctl reset-failed {unit(port)} 2>/dev/null || true")
        host.run(f"systemctl restart {unit(port)}")
        wait_healthy(host, port)
        publish(host, serving)
    if surge:
        publish(host, serving, down=[SURGE_PORT])
        drain(host, SURGE_PORT)
        host.run(f"systemctl stop {unit(SURGE_PORT)}")
        publish(host, ports)


def out_of_balancer(host: Host) -> bool:
    """The drain flag is set and nginx answers the balancer's /health with 503: the
    balancer takes the host out (a site from before the flag still answers 200)."""
    return balancer.drained(host) and host.read(facts.BALANCER_HEALTH_CODE) == "503"


def publish(host: Host, ports: list[int], down: list[int] = ()) -> None:
    """Install nginx's upstream of ``ports`` (``down`` ones marked so); reload nginx if it
    runs and the file changed. Reloads are graceful: requests in flight finish."""
    file = FILES[UPSTREAM]
    text = render(UPSTREAM, {"server_ports": ports, "down_ports": list(down)})
    if (
        files.ensure_file(
            host, file.path, text, mode=f"{file.mode:o}", owner=file.owner, group=file.group
        )
        and host.read(facts.unit_active("nginx")) == "active"
    ):
        host.run("nginx -t -q && systemctl reload nginx")


def drain(host: Host, port: int) -> None:
    """Until nginx holds no connection to the instance (bounded: a stuck one is cut)."""
    waiting.until(
        host,
        lambda: host.read(facts.upstream_connections(port)),
        lambda connections: connections == 0,
        timeout=DRAIN_TIMEOUT_S,
        poll=POLL_S,
    )


def wait_healthy(host: Host, port: int) -> None:
    """Until the instance's own /health answers 200 on loopback; an error with its journal
    after ``HEALTH_TIMEOUT_S``, or as soon as systemd has restarted it
    ``CRASH_LOOP_RESTARTS`` times while waiting (or given up on it): a server that cannot
    start (a broken environment, an MLflow that refuses the schema) exits within seconds,
    and ``Restart=always`` would start it again until the timeout."""
    name = unit(port)
    baseline: int | None = None  # NRestarts at the first poll that was not 200

    def failure(code: str, why: str) -> RemoteError:
        journal = host.read(facts.journal(f"-u {name}", 40))
        return host.error(f"wait for {name}", 1, f"/health on port {port} answered {code}"
                          f" {why}\n{journal}")  # fmt: skip

    def health() -> str:
        nonlocal baseline
        code = host.read(facts.instance_health(port))
        if code == "200":
            return code
        state = host.read(facts.unit_properties(name, "ActiveState", "NRestarts"))
        restarts = int(state.get("NRestarts") or 0)
        baseline = restarts if baseline is None else baseline
        if state.get("ActiveState") == "failed":
            raise failure(code, "and systemd gave up on it (failed)")
        if restarts - baseline >= CRASH_LOOP_RESTARTS:
            raise failure(code, f"and systemd restarted it {restarts - baseline} times meanwhile")
        return code

    waiting.until(
        host,
        health,
        lambda code: code == "200",
        timeout=HEALTH_TIMEOUT_S,
        poll=POLL_S,
        late=lambda code: failure(code, f"after {HEALTH_TIMEOUT_S}s"),
    )


def roll_back(
    host: Host,
    ctx: dict,
    previous: Environment,
    restore: str = "",
    failed: Environment | None = None,
) -> Outcome[None]:
    """After a failed switch: ``current`` back to ``previous``, its instances restarted one at
    a time. A schema the new environment migrated stays migrated (no migration runs
    backwards): ``restore`` is the command that puts back the backup taken before it.
    The ``failed`` environment loses its completion mark: the next try builds it again
    rather than switching to the same files.

    The previous MLflow refuses to start on a migrated schema (MLflow checks the schema's
    revision at start), so after a migration nothing is restarted: the instances that
    still answer keep serving, the others are stopped rather than left restarting, and
    the restore starts them all on ``previous``.
    """
    files.ensure_symlink(host, PATHS["current_env"], previous.prefix)
    rebuilt = ""
    if failed is not None and failed.prefix != previous.prefix:
        host.run(f"rm -f {shlex.quote(failed.prefix)}/{COMPLETE_MARKER}")
        rebuilt = f"; env {failed.name} is built again on the next try"
    if not restore:
        converge(host, ctx, previous)
        return changed(f"back on env {previous.name}{rebuilt}")
    present = sorted(host.read(facts.INSTANCES))
    answering = [p for p in present if host.read(facts.instance_health(p)) == "200"]
    stopped = [p for p in present if p not in answering]
    for port in stopped:
        host.run(
            f"systemctl stop {unit(port)}; systemctl reset-failed {unit(port)} 2>/dev/null || true"
        )
    if answering:
        publish(host, answering)
    serving = ", ".join(map(str, answering)) or "none"
    return changed(
        f"back on env {previous.name}{rebuilt}; serving: {serving}"
        + (f", stopped: {', '.join(map(str, stopped))}" if stopped else "")
        + f"; the database was migrated: to put it back, {restore}"
    )
