"""Deprecated provider resources and arguments among what a mocked run registered, both clouds.

Passing a deprecated argument as a keyword (``aws.s3.Bucket("b", acl=...)``) warns
nothing at run time: only the ``*Args`` class constructor calls ``warnings.warn``, and the
resource constructor bypasses it. So two checks look at every registered resource:

- ``marked``: the markers the SDK generates (``_utilities.deprecated`` on the Args
  property getters, ``pulumi.log.warn("X is deprecated")`` in a deprecated resource's
  constructor);
- ``replayed``: a deprecated class (``DeprecationWarning`` in its body), and the
  warnings the ``*Args`` class gives when the recorded inputs are passed to it again.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import warnings

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
def args_class(cls: type) -> type | None:
    """The Args class the constructor parses keywords into; not always ``<Type>Args``
    (``BucketVersioningInitArgs``), so it is read from the constructor's source."""
    named = re.search(r"get_resource_args_opts\((\w+),", inspect.getsource(cls))
    name = named.group(1) if named else cls.__name__ + "Args"
    return getattr(inspect.getmodule(cls), name, None)


@functools.cache
def deprecated_resource(cls: type) -> str | None:
    """The deprecation message of a deprecated resource class, or None."""
    source = inspect.getsource(cls._internal_init)
    found = re.search(r'pulumi\.log\.warn\("""(\w+ is deprecated[^"]*)"""\)', source)
    return found.group(1) if found else None


@functools.cache
def deprecated_inputs(cls: type) -> dict[str, str]:
    """Wire (camelCase) names of the class's deprecated arguments, with messages."""
    found = {}
    arguments = args_class(cls)
    if arguments is None:
        return found
    for py_name, wire_name in input_type_py_to_pulumi_names(arguments).items():
        prop = inspect.getattr_static(arguments, py_name, None)
        getter = getattr(prop, "fget", None)
        if getter is not None and "_pulumi_deprecated_callable" in getattr(getter, "__dict__", {}):
            found[wire_name] = f"{py_name} is deprecated"
    return found


def marked(token: str, inputs: dict) -> list[str]:
    """Every deprecation the SDK's markers name for a resource of ``token`` with ``inputs``."""
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


@functools.cache
def deprecated_class(cls: type) -> bool:
    """The class warns DeprecationWarning when it is used (in its body, before overloads)."""
    return "DeprecationWarning" in inspect.getsource(cls).split("@overload", 1)[0]


@functools.cache
def parameters(arguments: type) -> frozenset[str]:
    return frozenset(inspect.signature(arguments.__init__).parameters)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def replayed(resources) -> list[str]:
    """Deprecated resources, and the warnings each resource's inputs give its Args class."""
    findings = []
    for resource in resources:
        cls = resource_class(resource.typ)
        if cls is None:
            continue
        if deprecated_class(cls):
            findings.append(f"{resource.typ} is deprecated")
        arguments = args_class(cls)
        if arguments is None:
            continue
        known = parameters(arguments)
        kwargs = {_snake(k): v for k, v in resource.inputs.items() if _snake(k) in known}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            arguments(**kwargs)
        findings += [
            f"{resource.typ} {resource.name}: {w.message}"
            for w in caught
            if issubclass(w.category, DeprecationWarning)
        ]
    return findings
