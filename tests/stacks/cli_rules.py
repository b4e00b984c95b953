"""A faithful copy of the Pulumi CLI's stack-config rules, for tests (no CLI runs here).

Written from pulumi/pulumi (v3.259.0):

- ``sdk/go/common/workspace/project.go``: ``Project.Validate`` (a project key may have
  ``type``/``default`` only in the project namespace; ``array`` needs ``items``; a
  default must match its type; ``default`` and ``value`` exclude each other; keys of
  other namespaces need ``value``), ``ValidateConfigValue`` (``string``: any stored
  scalar; ``integer``: an int, a whole float or a string ``strconv.Atoi`` accepts;
  ``boolean``: ``true``/``false`` or a bool; ``object``: a map; ``array``: a list whose
  items validate) and ``InferFullTypeName`` (``array<string>``). ``project.json``: the
  types are string, integer, boolean, array, object (``object`` since v3.187.0,
  pulumi/pulumi#20132).
- ``sdk/go/common/workspace/paths.go``: ``ProjectStackPath``, the stack file is
  ``<project dir>/<stackConfigDir>/Pulumi.<stack>.yaml``.
- ``sdk/go/common/resource/config/key.go``: ``ParseKey``, stack file keys are
  ``namespace:name`` (or the old ``namespace:config:name``).
- ``sdk/go/common/resource/config/object.go``: ``MarshalString``, a YAML scalar is
  stored as its text and is no object; a YAML list or map is stored as JSON and is an
  object; ``{secure: ...}`` is a secret.
- ``pkg/workspace/config.go``: ``mergeConfig`` (a project-namespaced key with neither
  ``default`` nor ``value`` that the stack lacks is missing; the error lists them all,
  "Stack 'dev' is missing configuration value 'x'" / "values 'a' and 'b'"; defaults are
  then applied as ``createConfigValue`` does) and ``validateStackConfigValue`` (only a
  stored object is JSON-decoded before the type check, so ``pulumi config set K
  '[...]'``, stored as a string, fails an ``array`` key: "Stack 'dev' with
  configuration key 'k' must be of type 'array<string>'"; a ``secret: true`` key
  must be stored encrypted). ``TestStackConfigErrorsWhenMissingTwoStackValueForConfigTypeWithNoDefault``
  in ``pkg/workspace`` shows the missing-key rule.
- ``pkg/cmd/pulumi/config/config.go``: ``config set K V`` stores the string ``V``
  (``config.NewTypedValue``); ``config set-all --json`` stores an entry with
  ``objectValue`` as an object (``config.NewObjectValue``), available since v3.202.0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TYPES = ("string", "integer", "boolean", "array", "object")


@dataclass(frozen=True)
class Stored:
    """One config value as the CLI keeps it: its text, and whether it is an object."""

    text: str
    object: bool = False
    secure: bool = False

    def content(self) -> Any:
        """What ``validateStackConfigValue`` type-checks: JSON only for objects."""
        return json.loads(self.text) if self.object else self.text


class ProjectError(ValueError):
    """Pulumi.yaml itself is invalid (``Project.Validate``)."""


@dataclass(frozen=True)
class Project:
    name: str
    directory: Path
    stack_config_dir: str
    config: dict[str, dict[str, Any]]

    def stack_path(self, stack: str) -> Path:
        return self.directory / self.stack_config_dir / f"Pulumi.{stack}.yaml"

    def qualified(self, key: str) -> str:
        return key if ":" in key else f"{self.name}:{key}"


def full_type_name(declared: dict[str, Any]) -> str:
    items = declared.get("items")
    if items is not None:
        return f"array<{full_type_name(items)}>"
    return declared["type"]


def type_ok(declared: dict[str, Any], value: Any) -> bool:
    """``ValidateConfigValue``."""
    typ = declared["type"]
    if typ == "string":
        return isinstance(value, str)
    if typ == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value == math.trunc(value)):
            return True
        if isinstance(value, str):
            return _atoi(value)
        return False
    if typ == "boolean":
        return value in ("true", "false") or isinstance(value, bool)
    if typ == "object":
        return isinstance(value, dict)
    items = declared.get("items")
    return isinstance(value, list) and items is not None and all(type_ok(items, v) for v in value)


def _atoi(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return body.isascii() and body.isdigit()


def load_project(path: Path) -> Project:
    document = yaml.safe_load(path.read_text())
    name = document.get("name")
    if not name:
        raise ProjectError("project is missing a 'name' attribute")
    config = document.get("config") or {}
    for key, declared in config.items():
        if not isinstance(declared, dict):
            config[key] = declared = {"default": declared}
        if "default" in declared and "value" in declared:
            raise ProjectError(f"project config '{key}' cannot have both a 'default' and 'value'")
        in_project = ":" not in key or key.startswith(name + ":")
        typ = declared.get("type")
        if in_project:
            if typ is not None and typ not in TYPES:
                raise ProjectError(f"config key '{key}': unknown type '{typ}'")
            if typ == "array" and "items" not in declared:
                raise ProjectError(
                    f"The configuration key '{key}' declares an array but does not specify "
                    "the underlying type via the 'items' attribute"
                )
            if (
                typ is not None
                and "default" in declared
                and not type_ok(declared, declared["default"])
            ):
                raise ProjectError(
                    f"The default value specified for configuration key '{key}' is not of the "
                    f"expected type '{full_type_name(declared)}'"
                )
        else:
            if typ is not None:
                raise ProjectError(
                    f"Configuration key '{key}' is not namespaced by the project and should not "
                    "define a type"
                )
            if "default" in declared:
                raise ProjectError(
                    f"Configuration key '{key}' ... should not define a default value"
                )
            if "value" not in declared:
                raise ProjectError(
                    f"Configuration key '{key}' is namespaced and must provide an attribute 'value'"
                )
    return Project(name, path.parent, document.get("stackConfigDir", ""), config)


def parse_key(key: str) -> str:
    """``ParseKey``: ``ns:name`` or ``ns:config:name``; anything else is an error."""
    parts = key.split(":")
    if len(parts) == 2 and all(parts):
        return key
    if len(parts) == 3 and parts[1] == "config":
        return f"{parts[0]}:{parts[2]}"
    raise ValueError(
        f"could not parse {key} as a configuration key "
        "(configuration keys should be of the form `<namespace>:<name>`)"
    )


def stored_from_yaml(value: Any) -> Stored:
    """``object.MarshalString`` for a value read from a stack file."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return Stored(str(value["secure"]), secure=True)
    if isinstance(value, bool):
        return Stored("true" if value else "false")
    if isinstance(value, int | float | str):
        return Stored(str(value))
    return Stored(json.dumps(value), object=True)


def load_stack_file(project: Project, stack: str) -> dict[str, Stored]:
    path = project.stack_path(stack)
    document = yaml.safe_load(path.read_text()) or {}
    return {parse_key(k): stored_from_yaml(v) for k, v in (document.get("config") or {}).items()}


def validate(project: Project, stack: str, stored: dict[str, Stored]) -> list[str]:
    """The CLI's errors for ``stored`` (empty when ``pulumi preview`` would go on)."""
    missing = []
    for key in sorted(project.config):
        declared = project.config[key]
        full = project.qualified(key)
        namespace = full.split(":", 1)[0]
        optional = "default" in declared or "value" in declared
        if full not in stored and not optional and namespace == project.name:
            missing.append(key)
    if missing:
        return [missing_error(stack, missing)]
    errors = []
    for key in sorted(project.config):
        declared = project.config[key]
        value = stored.get(project.qualified(key))
        if value is None or declared.get("type") is None:
            continue
        if declared.get("secret") and not value.secure:
            errors.append(
                f"Stack '{stack}' with configuration key '{key}' must be encrypted as it's secret"
            )
            continue
        if value.secure:
            continue  # checked after decryption, which tests do not have
        if not type_ok(declared, value.content()):
            errors.append(
                f"Stack '{stack}' with configuration key '{key}' must be of type "
                f"'{full_type_name(declared)}'"
            )
    return errors


def missing_error(stack: str, keys: list[str]) -> str:
    if len(keys) == 1:
        return f"Stack '{stack}' is missing configuration value '{keys[0]}'"
    keys = sorted(keys)
    listed = ", ".join(f"'{k}'" for k in keys[:-2])
    listed = (listed + ", " if listed else "") + f"'{keys[-2]}' and '{keys[-1]}'"
    return f"Stack '{stack}' is missing configuration values {listed}"


def program_config(project: Project, stored: dict[str, Stored]) -> dict[str, str]:
    """What the engine hands the program: stored texts plus the project defaults
    (``createConfigValue``: scalars as Go's ``%v``, others as JSON)."""
    out = {key: value.text for key, value in stored.items() if not value.secure}
    for key, declared in project.config.items():
        full = project.qualified(key)
        if full in out or "default" not in declared and "value" not in declared:
            continue
        default = declared.get("default", declared.get("value"))
        if isinstance(default, bool):
            out[full] = "true" if default else "false"
        elif isinstance(default, int | float | str):
            out[full] = str(default)
        else:
            out[full] = json.dumps(default)
    return out


def stored_from_cli(args: list[str]) -> dict[str, Stored]:
    """What one recorded ``pulumi config set`` / ``config set-all --json`` call stored."""
    words = [a for a in args if not a.startswith("--")]
    if args[:2] == ["config", "set"]:
        if "--path" in args:
            raise ValueError("config set --path is not modelled")
        return {words[2]: Stored(words[3], secure="--secret" in args)}
    if args[:2] == ["config", "set-all"]:
        entries = json.loads(args[args.index("--json") + 1])
        return {
            key: Stored(
                entry["value"], object="objectValue" in entry, secure=entry.get("secret", False)
            )
            for key, entry in entries.items()
        }
    return {}
