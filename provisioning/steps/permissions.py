"""Permissions as code: the ``permissions`` section converged through MLflow's own auth API.

Three moves, so the decision is a pure function (``plan``) tested on its own:
``READ_SCRIPT`` on the VM reads the grants on the resources the settings name (and on
those the kit granted before), ``plan`` compares them with the settings, ``APPLY_SCRIPT``
makes the changes and keeps the record of the grants the kit created
(``PATHS["permissions_record"]``): only those are removed when the settings drop them,
unless ``permissions.exclusive`` says the settings are the whole truth for the resources
they name. The scripts run as the service user on the VM against nginx on loopback, as
the kit's admin (basic: ``admin_username`` and ``admin_password``; oidc: the kit's
service account and its token file, read on the VM).

The APIs: basic auth (MLflow 3.17) grants to users through ``/api/3.0/mlflow/users/
permissions/{list,grant,revoke}``; mlflow-oidc-auth through ``/api/2.0/mlflow/permissions/
{users,groups}/<name>/{experiments,registered-models}/<id or name>`` and lists the grants on
one resource at ``/api/2.0/mlflow/permissions/{experiments,registered-models}/<id>/{users,groups}``.
A grant waits (reported, not failed) while its experiment or model does not exist, or,
with oidc, while its user has not signed in yet; an unknown group is created.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from provisioning import facts
from provisioning.layout import PATHS, USER
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.transport import Host

#: (kind "user" | "group", subject, resource "experiments" | "registered_models", name)
Key = tuple[str, str, str, str]

_COMMON = """
import json, sys, warnings
from urllib.parse import quote
import requests
warnings.filterwarnings("ignore")
given = json.load(sys.stdin)
#: nginx on the VM's loopback (a test may point the scripts elsewhere).
API = given.get("api", "https://127.0.0.1")
password = given.get("password")
if password is None:
    with open(given["token_file"]) as handle:
        password = handle.read().strip()
AUTH = (given["username"], password)

def call(method, path, **kwargs):
    response = requests.request(method, API + path, auth=AUTH, verify=False, timeout=60, **kwargs)
    if response.status_code >= 500 or response.status_code in (401, 403):
        sys.exit(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
    return response

def q(text):
    return quote(text, safe="")

OIDC = "/api/2.0/mlflow/permissions"
BASIC = "/api/3.0/mlflow/users/permissions"
"""

#: Prints {"experiments": {name: id or null}, "models": {name: bool}, "users": [known],
#: "groups": [known], "grants": [[kind, subject, resource, name, level], ...]}.
READ_SCRIPT = (
    _COMMON
    + """
out = {"experiments": {}, "models": {}, "users": [], "groups": [], "grants": []}
for name in given["experiments"]:
    r = call("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
    out["experiments"][name] = r.json()["experiment"]["experiment_id"] if r.status_code == 200 else None
for name in given["models"]:
    r = call("GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})
    out["models"][name] = r.status_code == 200
names = {v: k for k, v in out["experiments"].items() if v}
if given["mode"] == "oidc":
    out["users"] = call("GET", "/api/2.0/mlflow/users").json()
    out["groups"] = call("GET", OIDC + "/groups").json()
    places = [("experiments", "experiments", i, names[i]) for i in names]
    places += [("registered_models", "registered-models", n, n) for n, ok in out["models"].items() if ok]
    for resource, path, ident, name in places:
        for kind in ("users", "groups"):
            for item in call("GET", f"{OIDC}/{path}/{q(ident)}/{kind}").json():
                if kind == "users" and item.get("kind") not in ("user", "service-account", None):
                    continue
                out["grants"].append([kind[:-1], item["name"], resource, name, item["permission"]])
else:
    types = {"experiment": "experiments", "registered_model": "registered_models"}
    for user in given["users"]:
        r = call("GET", BASIC + "/list", params={"username": user})
        if r.status_code != 200:
            continue
        out["users"].append(user)
        for row in r.json()["permissions"]:
            resource = types.get(row["resource_type"])
            if not str(row.get("role_name", "")).startswith("__user_") or resource is None:
                continue
            name = names.get(row["resource_pattern"]) if resource == "experiments" else row["resource_pattern"]
            if name is not None:
                out["grants"].append(["user", user, resource, name, row["permission"]])
print(json.dumps(out))
"""
)

#: Applies {"ops": [[op, kind, subject, resource, name, level], ...]} in order, keeps the
#: record of the kit's grants (written even when an op fails), prints {"done": [...]}.
APPLY_SCRIPT = (
    _COMMON
    + """
import os
owned = {tuple(k) for k in given["owned"]}
done = []

def keep():
    path = given["record_file"]
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(sorted(owned), handle)
    os.replace(path + ".new", path)

def check(r, what):
    if r.status_code not in (200, 201, 204):
        sys.exit(f"{what}: {r.status_code} {r.text[:300]}")

try:
    for op, kind, subject, resource, name, level in given["ops"]:
        what = f"{op} {kind} {subject} {resource} {name} {level or ''}".strip()
        if op == "create-group":
            check(call("POST", OIDC + "/groups", json={"group_name": subject}), what)
        elif given["mode"] == "oidc":
            ident = given["experiments"][name] if resource == "experiments" else name
            path = f"{OIDC}/{kind}s/{q(subject)}/{resource.replace('_', '-')}/{q(ident)}"
            method = {"create": "POST", "update": "PATCH", "delete": "DELETE"}[op]
            check(call(method, path, json={"permission": level} if level else None), what)
        else:
            rtype = "experiment" if resource == "experiments" else "registered_model"
            ident = given["experiments"][name] if resource == "experiments" else name
            body = {"username": subject, "resource_type": rtype, "resource_id": ident}
            if op in ("update", "delete"):
                check(call("POST", BASIC + "/revoke", json=body), what)
            if op in ("create", "update"):
                check(call("POST", BASIC + "/grant", json={**body, "permission": level}), what)
        key = (kind, subject, resource, name)
        if op == "create":
            owned.add(key)
        elif op == "delete":
            owned.discard(key)
        done.append(what)
    owned = {k for k in owned if tuple(k) not in {tuple(d) for d in given["forget"]}}
finally:
    keep()
print(json.dumps({"done": done}))
"""
)


@dataclass(frozen=True)
class Plan:
    ops: list[list] = field(default_factory=list)
    #: Grants that wait: (key, why).
    waiting: list[tuple[Key, str]] = field(default_factory=list)
    #: Records of grants gone by themselves (their resource or grant removed by hand).
    forget: list[Key] = field(default_factory=list)


def desired(deployment: Deployment) -> dict[Key, str]:
    """Every grant of the settings: key -> level."""
    grants = {}
    for kind in ("users", "groups"):
        for subject, resources in deployment.permissions.get(kind, {}).items():
            for resource, named in resources.items():
                for name, level in named.items():
                    grants[(kind[:-1], subject, resource, name)] = level
    return grants


def plan(
    want: dict[Key, str],
    current: dict[Key, str],
    owned: set[Key],
    state: dict,
    *,
    mode: str,
    exclusive: bool,
    admin: str,
) -> Plan:
    """What to do so the grants on the named resources are ``want``: the ops in order, the
    grants that wait, the records to drop. ``state`` is what READ_SCRIPT found."""
    result = Plan()
    exists = {("experiments", n) for n, i in state["experiments"].items() if i}
    exists |= {("registered_models", n) for n, ok in state["models"].items() if ok}
    users, groups = set(state["users"]), set(state["groups"])
    for key, level in sorted(want.items()):
        kind, subject, resource, name = key
        if (resource, name) not in exists:
            result.waiting.append(
                (key, f"{resource.replace('_', ' ')[:-1]} {name!r} does not exist yet")
            )
        elif kind == "user" and subject not in users:
            why = "has not signed in yet" if mode == "oidc" else "is no MLflow user yet"
            result.waiting.append((key, f"user {subject!r} {why}"))
        elif key not in current:
            if kind == "group" and subject not in groups:
                result.ops.append(["create-group", kind, subject, "", "", None])
                groups.add(subject)
            result.ops.append(["create", *key, level])
        elif current[key] != level:
            result.ops.append(["update", *key, level])
    for key in sorted(owned - set(want)):
        if key in current:
            result.ops.append(["delete", *key, None])
        else:
            result.forget.append(key)
    if exclusive:
        for key in sorted(set(current) - set(want) - owned):
            if key[1] != admin:
                result.ops.append(["delete", *key, None])
    return result


def _credentials(deployment: Deployment) -> dict:
    """The kit's admin: with oidc its token file is read on the VM, by the script itself."""
    if deployment.auth == "oidc":
        return {"username": deployment.admin_username, "password": None,
                "token_file": PATHS["oidc_admin_token"]}  # fmt: skip
    return {"username": deployment.admin_username, "password": deployment.admin_password.reveal()}


def _python(script: str) -> str:
    return f"{PATHS['current_env']}/bin/python -c {shlex.quote(script)}"


def _run(host: Host, what: str, script: str, given: dict) -> dict:
    result = host.run(_python(script), user=USER, check=False, stdin=json.dumps(given), timeout=600)
    if result.exited != 0:
        raise host.error(what, result.exited, result.stderr or result.stdout)
    return json.loads(result.stdout.strip().splitlines()[-1])


def owned_grants(host: Host) -> set[Key]:
    text = host.read(facts.file_text(PATHS["permissions_record"]))
    return {tuple(k) for k in json.loads(text)} if text else set()


def converge(host: Host, deployment: Deployment) -> Outcome[None]:
    """The grants of the settings in place; those the kit created and the settings dropped
    removed (all others on the named resources too with ``exclusive``)."""
    want = desired(deployment)
    owned = owned_grants(host)
    if not want and not owned:
        return unchanged("no grants in the settings, none made before")
    keys = set(want) | owned
    given = {
        **_credentials(deployment),
        "mode": deployment.auth,
        "experiments": sorted({k[3] for k in keys if k[2] == "experiments"}),
        "models": sorted({k[3] for k in keys if k[2] == "registered_models"}),
        "users": sorted({k[1] for k in keys if k[0] == "user"}),
    }
    state = _run(host, "read MLflow's grants", READ_SCRIPT, given)
    current = {tuple(g[:4]): g[4] for g in state["grants"]}
    steps = plan(want, current, owned, state, mode=deployment.auth,
                 exclusive=deployment.permissions.get("exclusive", False),
                 admin=deployment.admin_username)  # fmt: skip
    waiting = "; ".join(f"{k[0]} {k[1]} on {k[3]}: {why}" for k, why in steps.waiting)
    if not steps.ops and not steps.forget:
        return unchanged(f"{len(want) - len(steps.waiting)} grant(s) as set"
                         + (f"; waiting: {waiting}" if waiting else ""))  # fmt: skip
    applied = _run(host, "change MLflow's grants", APPLY_SCRIPT, {
        **given, "ops": steps.ops, "owned": sorted(owned), "forget": steps.forget,
        "experiments": state["experiments"], "record_file": PATHS["permissions_record"],
    })  # fmt: skip
    counts = {op: sum(1 for o in steps.ops if o[0] == op) for op in ("create", "update", "delete")}
    detail = f"{counts['create']} granted, {counts['update']} changed, {counts['delete']} removed"
    if applied["done"] and any(o[0] == "create-group" for o in steps.ops):
        detail += ", groups created: " + ", ".join(
            o[2] for o in steps.ops if o[0] == "create-group"
        )
    if waiting:
        detail += f"; waiting: {waiting}"
    return changed(detail)


#: Prints {"rows": [[subject, resource, name, level, how], ...]}: who has what.
LIST_SCRIPT = (
    _COMMON
    + """
rows = []
if given["mode"] == "oidc":
    for user in call("GET", "/api/2.0/mlflow/users").json():
        for path, resource in (("experiments", "experiment"), ("registered-models", "registered model")):
            for item in call("GET", f"{OIDC}/users/{q(user)}/{path}").json():
                rows.append([f"user {user}", resource, item["name"], item["permission"], item.get("kind", "")])
    for group in call("GET", OIDC + "/groups").json():
        for path, resource in (("experiments", "experiment"), ("registered-models", "registered model")):
            for item in call("GET", f"{OIDC}/groups/{q(group)}/{path}").json():
                rows.append([f"group {group}", resource, item["name"], item["permission"], "group"])
else:
    users = call("GET", "/api/2.0/mlflow/users/list").json().get("users", [])
    for user in users:
        name = user["username"]
        r = call("GET", BASIC + "/list", params={"username": name})
        if user.get("is_admin"):
            rows.append([f"user {name}", "everything", "*", "admin", "admin"])
        for row in r.json().get("permissions", []) if r.status_code == 200 else []:
            rows.append([f"user {name}", row["resource_type"], row["resource_pattern"],
                         row["permission"], row.get("role_name", "")])
print(json.dumps({"rows": rows}))
"""
)


def listing(host: Host, deployment: Deployment) -> list[list[str]]:
    """Rows of (subject, resource, name, permission, how): every user's and group's grants."""
    given = {**_credentials(deployment), "mode": deployment.auth}
    rows = _run(host, "list MLflow's grants", LIST_SCRIPT, given)["rows"]
    owned = owned_grants(host)
    marked = []
    for subject, resource, name, level, how in rows:
        kind, _, who = subject.partition(" ")
        plural = "experiments" if resource == "experiment" else "registered_models"
        kit = (kind, who, plural, name) in owned
        marked.append([subject, resource, name, level, how + (" (fab bootstrap)" if kit else "")])
    return marked
