"""STAND-IN for the ``pulumi`` CLI, for tests only (the real CLI cannot be installed here).

The test conftest puts an executable named ``pulumi`` on PATH that runs this
script. It keeps a small fake backend in the JSON file named by
``STANDIN_PULUMI_STATE``, appends every invocation's arguments to ``calls``,
and answers the handful of commands the kit uses (stack init/select/ls/rm/
output, config set / config --json, up, destroy) with the same exit codes and
error texts as the real CLI.

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

PROJECT = "mlflow-server"


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
        elif arg in ("--stack", "-s", "--dest"):
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
    if words[:2] == ["config", "set"]:
        command = "config set"
    elif words == ["config"]:
        command = "config"

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
        print(json.dumps(data["outputs"]))
        return 0
    if command == "config set":
        key, value = words[2], words[3]
        key = key if ":" in key else f"{PROJECT}:{key}"
        data["config"][key] = {"value": value, "secret": "--secret" in args}
        return 0
    if command == "config":
        shown = {
            key: {"value": None if entry["secret"] else entry["value"], "secret": entry["secret"]}
            for key, entry in data["config"].items()
        }
        print(json.dumps(shown))
        return 0
    if command == "up":
        data["resources"] = state.get("up_resources", 9)
        print(f"Updating ({stack}):\n    + {data['resources']} created")
        return 0
    if command == "destroy":
        removed = data["resources"]
        data["resources"] = 0
        print(f"Destroying ({stack}):\n    - {removed} deleted")
        return 0
    return fail(f"stand-in pulumi does not know `{' '.join(args)}`", 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
