"""Find deprecated pulumi_aws resources and arguments from the SDK's own markers.

Passing a deprecated argument as a keyword (``aws.s3.Bucket("b", acl=...)``) warns
nothing at run time: only the ``*Args`` class constructor calls ``warnings.warn``, and
the resource constructor bypasses it. So the tests read the markers the SDK generates
(``_utilities.deprecated`` on the Args property getters, ``pulumi.log.warn("X is
deprecated")`` in a deprecated resource's constructor) and check every registered
resource's inputs against them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re

from pulumi._types import input_type_py_to_pulumi_names


@functools.cache
def resource_class(token: str) -> type | None:
    """The Python class for a type token such as ``aws:s3/bucket:Bucket``."""
    package, module, name = token.split(":")
    if package == "pulumi":  # providers: pulumi:providers:aws
        package, module, name = name, "index", "Provider"
    module = module.split("/")[0]
    path = f"pulumi_{package}" + ("" if module == "index" else f".{module}")
    try:
        return getattr(importlib.import_module(path), name)
    except (ImportError, AttributeError):
        return None


@functools.cache
def deprecated_resource(cls: type) -> str | None:
    """The deprecation message of a deprecated resource class, or None."""
    source = inspect.getsource(cls._internal_init)
    found = re.search(r'pulumi\.log\.warn\("""(\w+ is deprecated[^"]*)"""\)', source)
    return found.group(1) if found else None


@functools.cache
def deprecated_inputs(cls: type) -> dict[str, str]:
    """Wire (camelCase) names of the class's deprecated arguments, with messages."""
    # The Args class is the one the constructor parses keywords into; its name is
    # not always <Type>Args (BucketVersioningInitArgs), so read it from the source.
    named = re.search(r"get_resource_args_opts\((\w+),", inspect.getsource(cls))
    args_cls = getattr(inspect.getmodule(cls), named.group(1), None) if named else None
    if args_cls is None:
        return {}
    found = {}
    for py_name, wire_name in input_type_py_to_pulumi_names(args_cls).items():
        prop = inspect.getattr_static(args_cls, py_name, None)
        getter = getattr(prop, "fget", None)
        if getter is not None and "_pulumi_deprecated_callable" in getattr(getter, "__dict__", {}):
            found[wire_name] = f"{py_name} is deprecated"
    return found


def deprecations(token: str, inputs: dict) -> list[str]:
    """Every deprecation a resource of type ``token`` with ``inputs`` runs into."""
    cls = resource_class(token)
    if cls is None:
        return []
    problems = []
    message = deprecated_resource(cls)
    if message:
        problems.append(f"{token}: {message}")
    deprecated = deprecated_inputs(cls)
    problems += [f"{token}.{name}: {deprecated[name]}" for name in inputs if name in deprecated]
    return problems
