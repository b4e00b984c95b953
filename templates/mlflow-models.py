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

import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.request

# Its modules are installed beside it (the script's directory comes first on sys.path)
# and stay as installed there: no bytecode cache written next to them as root.
sys.dont_write_bytecode = True

from kit_models_files import (  # noqa: E402
    DESIRED,
    ENVS_DIR,
    MODELS_DIR,
    NGINX_DIR,
    SYSTEMD_DIR,
    UNIT_FILE,
    Failure,
    dropin,
    free_ports,
    instance_unit,
    location_conf,
    parse_dropin,
    parse_instance,
    spec_digest,
    upstream_conf,
    upstream_ports,
)
from kit_models_host import (  # noqa: E402
    ensure_env,
    ensure_model,
    journal,
    put_back,
    read,
    remove,
    resolve,
    run,
    unit_state,
    write,
)

TIMER = "mlflow-models.timer"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEALTH_TIMEOUT_S = 300
DRAIN_TIMEOUT_S = 30
MAX_RESTARTS = 3


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
        url = f"http://127.0.0.1:{port}/ping"
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
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
                if (
                    state.get("ActiveState") == "failed"
                    or int(state.get("NRestarts") or 0) >= MAX_RESTARTS
                ):
                    raise Failure(
                        "{} does not start ({} restarts):\n{}".format(
                            unit, state.get("NRestarts"), journal(unit)
                        )
                    )
        if pending and time.monotonic() > deadline:
            unit = next(iter(pending))
            raise Failure(
                f"{unit} did not answer /ping within {HEALTH_TIMEOUT_S}s:\n{journal(unit)}"
            )
        if pending:
            time.sleep(1)


def connections(port):
    out = run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], check=False).stdout
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
        write(
            os.path.join(directory, "kit.conf"),
            dropin(name, version, port, python, model_dir, memory_mb, spec),
        )
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
    if len(live) == workers and all(
        mine.get(unit, {}).get("KIT_MODEL_SPEC") == spec for unit in live_units
    ):
        for unit in live_units:
            state = unit_state(unit)
            if state.get("UnitFileState") != "enabled" or state.get("ActiveState") != "active":
                run(["systemctl", "reset-failed", unit], check=False)
                run(["systemctl", "enable", unit])
                run(["systemctl", "restart", unit])
                done.append(f"restarted {unit}")
        if done:
            wait_healthy({unit: parse_instance(unit)[1] for unit in live_units})
        # Both files as this version of the kit writes them (the location uses what the
        # upstream file defines), one reload.
        rewritten = write(upstream_path, upstream_conf(name, version, live))
        if write(location_path, location_conf(name)) or rewritten:
            reload_nginx()
            done.append("nginx location")
        leftovers = [unit for unit in mine if unit not in live_units]
        stop_instances(leftovers)
        done += [f"removed {unit}" for unit in leftovers]
        return version, ", ".join(done)
    # Blue/green: the new instances beside the old ones, nginx switched, the old drained.
    taken = {parse_instance(unit)[1] for unit in present}
    ports = free_ports(workers, taken, port_is_free)
    new = start_instances(name, version, ports, python, model_dir, memory_mb, spec)
    try:
        wait_healthy(new)
        old_files = {path: read(path, None) for path in (upstream_path, location_path)}
        write(upstream_path, upstream_conf(name, version, ports))
        write(location_path, location_conf(name))
        try:
            reload_nginx()
        except Failure:
            put_back(old_files)
            raise
    except Failure:
        stop_instances(list(new))
        raise
    old = [unit for unit in mine if unit not in new]
    drain([parse_instance(unit)[1] for unit in old])
    stop_instances(old)
    what = "version {} on {}".format(version, ", ".join(str(p) for p in ports))
    if built:
        what += f" (environment {built} built)"
    elif downloaded:
        what += " (downloaded)"
    if old:
        what += ", replaced {}".format(", ".join(sorted(old)))
    return version, what


def withdraw(name, present):
    """An endpoint no longer desired: out of nginx, drained, stopped; or a Failure with its
    nginx files put back and its instances still serving."""
    paths = [
        os.path.join(NGINX_DIR, name + suffix) for suffix in (".location.conf", ".upstream.conf")
    ]
    old_files = {path: read(path, None) for path in paths}
    if any([remove(path) for path in paths]):
        try:
            reload_nginx()
        except Failure:
            put_back(old_files)
            raise
    units = [unit for unit in present if parse_instance(unit)[0] == name]
    drain([parse_instance(unit)[1] for unit in units])
    stop_instances(units)
    return f"withdrawn ({len(units)} instance(s) stopped)"


def prune(present):
    """Model versions and environments no instance uses any more."""
    used_dirs = {values.get("__pyfunc_model_path__") for values in present.values()}
    used_envs = {
        values.get("KIT_MODEL_PYTHON", "").split("/env/bin/")[0] for values in present.values()
    }
    removed = []
    for name in os.listdir(MODELS_DIR) if os.path.isdir(MODELS_DIR) else ():
        for version in os.listdir(os.path.join(MODELS_DIR, name)):
            path = os.path.join(MODELS_DIR, name, version)
            if path not in used_dirs:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"model {name}/{version}")
        if not os.listdir(os.path.join(MODELS_DIR, name)):
            os.rmdir(os.path.join(MODELS_DIR, name))
    for entry in os.listdir(ENVS_DIR) if os.path.isdir(ENVS_DIR) else ():
        path = os.path.join(ENVS_DIR, entry)
        if os.path.isdir(path) and path not in used_envs:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"environment {entry}")
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
            print(
                f"endpoint {name}: FAILED, left as it was: {failure}", file=sys.stderr, flush=True
            )
            continue
        if what:
            summary["changed"][name] = what
            print(f"endpoint {name}: {what}", flush=True)
        else:
            summary["ok"][name] = f"version {version}, as wanted"
    wanted = {endpoint["name"] for endpoint in desired}
    present = instances()
    gone = sorted({parse_instance(unit)[0] for unit in present} - wanted)
    gone += sorted(
        entry.rsplit(".", 2)[0]
        for entry in os.listdir(NGINX_DIR)
        if entry.endswith(".location.conf")
        and entry.rsplit(".", 2)[0] not in wanted
        and entry.rsplit(".", 2)[0] not in gone
    )
    for name in gone:
        try:
            summary["changed"][name] = withdraw(name, present)
        except Failure as failure:
            summary["failed"][name] = str(failure)
            print(
                f"endpoint {name}: FAILED, left as it was: {failure}", file=sys.stderr, flush=True
            )
            continue
        print(f"endpoint {name}: {summary['changed'][name]}", flush=True)
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
            print(
                f"model name {name!r}: the kit serves names of letters, digits and _.-",
                file=sys.stderr,
            )
            return 2
        try:
            found = resolve(name, **{argv[2][2:]: argv[3]})
        except Failure as failure:
            print(str(failure), file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    "name": name,
                    "version": str(found["version"]),
                    "run_id": found.get("run_id", ""),
                    "status": found.get("status", ""),
                }
            )
        )
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
