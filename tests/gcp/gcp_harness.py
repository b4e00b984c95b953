"""Run the GCP program under ``pulumi.runtime.set_mocks`` and record what it declares.

A uniquely named module rather than conftest.py, so that it cannot be confused with
another test directory's conftest when both run in one pytest process.

Mocks and config are process-global in the Pulumi SDK, so every run sets both
afresh; nothing here leaks into other test directories' runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp

#: The pulumi_gcp modules the program uses. They load lazily, and loading one runs the
#: module-level DeprecationWarning of every deprecated resource it contains (say
#: compute.MangedSslCertificate), used or not. Load them now, with those ignored, so
#: that in the tests DeprecationWarning-as-error means "the program used something
#: deprecated", not "the package was imported".
GCP_MODULES = ("compute", "sql", "storage", "serviceaccount", "projects", "servicenetworking")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for _module in GCP_MODULES:
        hasattr(getattr(pulumi_gcp, _module), "__loaded__")

PROJECT = "mlflow-server"
GCP_PROJECT = "my-project-123"
REGION = "europe-west1"
ZONE = "europe-west1-b"
#: What the mocked RandomPassword returns: every character a URI must escape.
NASTY_PASSWORD = "p@ss:w/rd?x#y%z&a=b+c d"
STATIC_IP = "203.0.113.10"
DB_PRIVATE_IP = "10.77.0.3"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3Qga2V5IG9ubHkgZm9yIHVuaXQgdGVzdHMuLi4u ops@example.com"
EXPIRES_AT = "203001011200"


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str
    custom: bool


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers resource registrations the way GCP would, and keeps every one."""

    def __init__(self) -> None:
        self.registered: list[Registered] = []
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.registered.append(
            Registered(args.typ, args.name, dict(args.inputs), args.provider or "", args.custom)
        )
        state = dict(args.inputs)
        typ = args.typ
        if typ.startswith("gcp:") and "name" not in state:
            state["name"] = f"{args.name}-a1b2c3d"  # Pulumi's auto-naming suffix
        if typ == "random:index/randomPassword:RandomPassword":
            state["result"] = NASTY_PASSWORD
        elif typ == "gcp:sql/databaseInstance:DatabaseInstance":
            state["privateIpAddress"] = DB_PRIVATE_IP
            state["connectionName"] = f"{GCP_PROJECT}:{REGION}:{state['name']}"
        elif typ == "gcp:serviceaccount/account:Account":
            state["email"] = f"{state['accountId']}@{GCP_PROJECT}.iam.gserviceaccount.com"
            state["member"] = f"serviceAccount:{state['email']}"
        elif typ == "gcp:compute/address:Address":
            state["address"] = STATIC_IP
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args.token)
        return {}


@dataclass
class StackRun:
    """What one run of the program declared and exported."""

    registered: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret: dict[str, bool] = field(default_factory=dict)

    @property
    def resources(self) -> list[Registered]:
        """Everything but the root stack (which set_mocks registers itself)."""
        return [r for r in self.registered if r.typ != "pulumi:pulumi:Stack"]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]


def stack_config(environment: str = "dev", **overrides: Any) -> dict[str, str]:
    """A valid stack config for ``environment``; ``overrides`` use the key as typed
    in ``pulumi config set`` (``gcp:region``, ``gcpDbTier``), ``None`` removes a key."""
    config: dict[str, Any] = {
        "cloud": "gcp",
        "environment": environment,
        "httpsAllowedCidrs": ["203.0.113.0/24"],
        "sshPublicKeys": [SSH_KEY],
        "gcp:project": GCP_PROJECT,
        "gcp:region": REGION,
        "gcp:zone": ZONE,
    }
    if environment == "test":
        config["expiresAt"] = EXPIRES_AT
    config.update(overrides)
    wire = {}
    for key, value in config.items():
        if value is None:
            continue
        full = key if ":" in key else f"{PROJECT}:{key}"
        wire[full] = value if isinstance(value, str) else json.dumps(value)
    return wire


def run_program(
    config: dict[str, str], stack: str | None = None, mocks: RecordingMocks | None = None
) -> StackRun:
    """Run ``stacks.program.main`` under fresh mocks and config; raises what it raises.

    The program runs inside a ``@pulumi.runtime.test`` function, so an exception
    inside any ``apply`` (or a resource registration) fails the caller too. Pass
    ``mocks`` to inspect what was registered when the program fails.
    """
    from stacks.program import main

    mocks = mocks or RecordingMocks()
    stack = stack or f"gcp-{config.get(PROJECT + ':environment', 'dev')}"
    pulumi.runtime.set_all_config(config, [])
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    run = StackRun(mocks.registered)

    @pulumi.runtime.test
    def program():
        outputs = main()

        async def settle():
            for name, output in outputs.items():
                run.outputs[name] = await output.future()
                run.secret[name] = await output.is_secret()

        return settle()

    program()
    return run


def resource_class(typ: str) -> type | None:
    """The SDK class behind a type token such as ``gcp:compute/firewall:Firewall``."""
    if typ == "pulumi:providers:gcp":
        return pulumi_gcp.Provider
    package, rest = typ.split(":", 1)
    if package not in ("gcp", "random") or rest.count(":") != 1:
        return None
    module_path, name = rest.split(":")
    module = {"gcp": "pulumi_gcp", "random": "pulumi_random"}[package]
    sub = module_path.split("/")[0]
    return getattr(importlib.import_module(module if sub == "index" else f"{module}.{sub}"), name)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def deprecation_findings(resources: list[Registered]) -> list[str]:
    """Deprecated resources, and deprecated top-level arguments among recorded inputs.

    The SDK warns about a deprecated argument only when its ``*Args`` class is
    constructed, not when the same argument is passed to a resource as a keyword,
    so each resource's recorded inputs are replayed through its ``*Args`` class.
    """
    findings = []
    for resource in resources:
        cls = resource_class(resource.typ)
        if cls is None:
            continue
        body = inspect.getsource(cls).split("@overload", 1)[0]
        if "DeprecationWarning" in body:
            findings.append(f"{resource.typ} is deprecated")
        args_cls = getattr(inspect.getmodule(cls), cls.__name__ + "Args", None)
        if args_cls is None:
            continue
        known = inspect.signature(args_cls.__init__).parameters
        kwargs = {_snake(k): v for k, v in resource.inputs.items() if _snake(k) in known}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args_cls(**kwargs)
        findings += [
            f"{resource.typ} {resource.name}: {w.message}"
            for w in caught
            if issubclass(w.category, DeprecationWarning)
        ]
    return findings
