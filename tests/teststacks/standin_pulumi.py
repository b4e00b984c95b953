"""STAND-IN for the ``pulumi`` CLI, for tests only (the real CLI cannot be installed here).

The test conftest puts an executable named ``pulumi`` on PATH that runs this
script. It keeps a small fake backend in the JSON file named by
``STANDIN_PULUMI_STATE``, appends every invocation's arguments to ``calls``,
and answers the commands the kit uses (version, stack init/select/ls/rm/output/
export, config set / set-all --json / config --json, up, destroy) with the same
exit codes and error texts as the real CLI. Where tests rely on it, it is as strict
as the real one:

- ``up`` applies the CLI's config rules to the stack's stored config against
  Pulumi.yaml (tests/stacks/cli_rules.py: missing keys, types as stored), then runs
  the real program under Pulumi's mocks with the config the engine would hand it;
  a refused setting fails ``up`` as the program's error fails the real one. It
  records the resources, the outputs (secrets marked) and which resources carry
  deletion or termination protection.
- ``destroy`` fails while a resource is protected, with the providers' messages.
- ``stack output --json`` shows secret outputs as ``[secret]`` without
  ``--show-secrets``.

What it does not do (the real CLI does): touch a cloud or a provider plugin, keep
secrets encrypted, validate secret values after decryption, model ``--path``,
refresh, or run the program on ``preview``.

Failures are replayed from ``script``: a list of entries such as
``{"command": "destroy", "stack": "s", "exit": 255, "output": "...",
"resources": 3}``; the first entry whose command (and stack, if given) matches
is consumed, ``resources`` (if present) becomes the stack's resource count (a
destroy that got halfway), and the command fails with that output. State is
saved before the failure, like a real partial update.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PROJECT = "mlflow-server"
REPO = Path(__file__).resolve().parents[2]
#: What ``pulumi version`` answers (state "version" overrides it).
VERSION = "v3.259.0"
#: The providers' refusals when a protected resource is deleted.
PROTECTED_MESSAGES = {
    "gcp:sql/databaseInstance:DatabaseInstance": "Error, failed to delete instance because "
    "deletion_protection is set to true. Set it to false to proceed with instance deletion",
    "gcp:compute/instance:Instance": "Error deleting instance: Invalid resource usage: "
    "'Resource cannot be deleted if it's protected against deletion.'",
    "aws:rds/instance:Instance": "deleting RDS DB Instance: InvalidParameterCombination: "
    "Cannot delete protected DB Instance, please disable deletion protection and try again.",
    "aws:ec2/instance:Instance": "terminating EC2 Instance: OperationNotPermitted: The instance "
    "may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.",
}


def main(argv: list[str]) -> int:
    path = os.environ["STANDIN_PULUMI_STATE"]
    with open(path) as handle:
        state = json.load(handle)
    args = [arg for arg in argv if arg != "--non-interactive"]
    state.setdefault("calls", []).append(argv)
    try:
        code = dispatch(state, args)
    finally:
        with open(path, "w") as handle:
            json.dump(state, handle, indent=1)
    return code


def option(args: list[str], name: str) -> str | None:
    if name in args:
        return args[args.index(name) + 1]
    return None


def positional(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--stack", "-s", "--dest", "--json") and arg != args[-1]:
            if arg == "--json" and args[:2] != ["config", "set-all"]:
                continue

            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def fail(message: str, code: int = 255) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def scripted(state: dict, command: str, stack: str | None) -> dict | None:
    for entry in state.get("script", []):
        if entry["command"] == command and entry.get("stack") in (None, stack):
            state["script"].remove(entry)
            return entry
    return None


def dispatch(state: dict, args: list[str]) -> int:
    words = positional(args)
    stack = option(args, "--stack") or option(args, "-s") or state.get("current")
    stacks = state.setdefault("stacks", {})
    command = " ".join(words[:2]) if words[:1] in (["stack"], ["config"]) else words[0]
    if words[:2] in (["config", "set"], ["config", "set-all"]):
        command = " ".join(words[:2])
    elif words == ["config"]:
        command = "config"
    if command == "version":
        print(state.get("version", VERSION))
        return 0

    entry = scripted(state, command, stack)
    if entry is not None:
        if "resources" in entry and stack in stacks:
            stacks[stack]["resources"] = entry["resources"]
        if entry.get("removed") and stack in stacks:
            del stacks[stack]
        print(entry.get("output", ""), file=sys.stderr if entry.get("exit") else sys.stdout)
        return entry.get("exit", 0)

    if command == "stack init":
        name = words[2]
        if name in stacks:
            return fail(f"stack '{name}' already exists")
        stacks[name] = {"config": {}, "resources": 0, "outputs": {}}
        state["current"] = name
        return 0
    if command == "stack ls":
        listing = [
            {
                "name": name,
                "current": name == state.get("current"),
                "updateInProgress": data.get("updateInProgress", False),
                "resourceCount": data["resources"],
            }
            for name, data in stacks.items()
        ]
        print(json.dumps(listing))
        return 0
    if stack not in stacks:
        return fail(f"no stack named '{stack}' found")
    data = stacks[stack]
    if command == "stack select":
        state["current"] = words[2]
        return 0
    if command == "stack rm":
        if data["resources"] > 0:
            return fail(
                f"'{stack}' still has resources; removal rejected. Possible actions:\n"
                f"- Make sure that '{stack}' is the stack that you want to destroy\n"
                "- Run `pulumi destroy` to delete the resources, then run `pulumi stack rm`\n"
                "- Run `pulumi stack rm --force` to override this error"
            )
        del stacks[stack]
        if state.get("current") == stack:
            state["current"] = None
        print(f"Stack '{stack}' has been removed!")
        return 0
    if command == "stack output":
        secret = set(data.get("secret_outputs", []))
        shown = "--show-secrets" in args
        print(
            json.dumps(
                {
                    k: v if shown or k not in secret else "[secret]"
                    for k, v in data["outputs"].items()
                }
            )
        )
        return 0
    if command == "stack export":
        resources = [{"type": t, "urn": u, "outputs": o} for t, u, o in protected(data)]
        print(json.dumps({"version": 3, "deployment": {"resources": resources}}))
        return 0
    if command == "config set":
        # As the CLI: without a value on the command line, the value is stdin (when no terminal).
        key = words[2]
        value = words[3] if len(words) > 3 else sys.stdin.read().removesuffix("\n")
        key = key if ":" in key else f"{PROJECT}:{key}"
        data["config"][key] = {"value": value, "secret": "--secret" in args}
        return 0
    if command == "config set-all":
        for key, entry in json.loads(option(args, "--json")).items():
            key = key if ":" in key else f"{PROJECT}:{key}"
            stored = {"value": entry["value"], "secret": entry.get("secret", False)}
            if "objectValue" in entry:
                stored["objectValue"] = entry["objectValue"]
            data["config"][key] = stored
        return 0
    if command == "config":
        shown = {}
        for key, entry in data["config"].items():
            item = {"value": None if entry["secret"] else entry["value"], "secret": entry["secret"]}
            if "objectValue" in entry and not entry["secret"]:
                item["objectValue"] = entry["objectValue"]
            shown[key] = item
        print(json.dumps(shown))
        return 0
    if command == "up":
        return up(stack, data)
    if command == "destroy":
        blocked = protected(data)
        if blocked:
            for typ, urn, _ in blocked:
                print(f"error: {urn}: {PROTECTED_MESSAGES[typ]}", file=sys.stderr)
            return fail("update failed")
        removed = data["resources"]
        data["resources"] = 0
        data["outputs"], data["protected"] = {}, []
        print(f"Destroying ({stack}):\n    - {removed} deleted")
        return 0
    return fail(f"stand-in pulumi does not know `{' '.join(args)}`", 2)


def stored_config(data: dict) -> dict:
    """The stack's config as the CLI stores it (tests/stacks/cli_rules.py Stored)."""
    from cli_rules import Stored

    return {
        key: Stored(
            entry["value"] if isinstance(entry["value"], str) else json.dumps(entry["value"]),
            object="objectValue" in entry,
            secure=entry["secret"],
        )
        for key, entry in data["config"].items()
    }


def up(stack: str, data: dict) -> int:
    """Validate the config as the CLI does, then run the program under mocks."""
    sys.path[:0] = [str(REPO / "tests" / "stacks"), str(REPO)]
    import cli_rules

    project = cli_rules.load_project(REPO / "Pulumi.yaml")
    stored = stored_config(data)
    errors = cli_rules.validate(project, stack, stored)
    if errors:
        return fail(errors[0])
    import stack_harness

    # Secrets reach the program decrypted, marked secret (the stand-in keeps them in the
    # clear; a stack file's {secure: ...} ciphertext cannot be decrypted here).
    values = cli_rules.program_config(project, stored)
    secrets = {key: value.text for key, value in stored.items() if value.secure}
    try:
        run = stack_harness.run({**values, **secrets}, stack=stack, secret_keys=list(secrets))
    except Exception as error:  # the program's own refusal, as the engine reports it
        return fail(f"running program failed: {type(error).__name__}: {error}")
    data["resources"] = len(run.resources) + 1  # the stack itself counts, as in `stack ls`
    data["outputs"] = run.outputs
    data["secret_outputs"] = sorted(name for name, secret in run.secret.items() if secret)
    data["protected"] = [
        [r.typ, f"urn:pulumi:{stack}::{PROJECT}::{r.typ}::{r.name}", r.inputs]
        for r in run.resources
        if r.typ in PROTECTED_MESSAGES
        and (r.inputs.get("deletionProtection") or r.inputs.get("disableApiTermination"))
    ]
    print(f"Updating ({stack}):\n    + {data['resources']} created")
    return 0


def protected(data: dict) -> list:
    """Resources whose deletion the cloud refuses: recorded by ``up``, or, for a stack a
    test seeded, what the program's defaults protect (dev and prod keep protection)."""
    if "protected" in data:
        return data["protected"]
    config = {k: e.get("value") for k, e in data.get("config", {}).items()}
    if config.get(f"{PROJECT}:environment") not in ("dev", "prod") or not data["resources"]:
        return []
    cloud = config.get(f"{PROJECT}:cloud")
    if config.get(f"{PROJECT}:{cloud}DeletionProtection") == "false":
        return []
    typ = (
        "aws:rds/instance:Instance"
        if cloud == "aws"
        else "gcp:sql/databaseInstance:DatabaseInstance"
    )
    return [[typ, f"urn:pulumi:seeded::{PROJECT}::{typ}::database", {"deletionProtection": True}]]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
