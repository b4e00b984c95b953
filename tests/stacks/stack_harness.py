"""Run the Pulumi program, either cloud, under ``pulumi.runtime.set_mocks`` and record it.

One harness for both clouds: the mocks answer registrations and invokes the way GCP
and AWS would, keep every one, and the run hands back what was declared and exported.
Mocks and config are process-global in the Pulumi SDK, so every run sets both afresh.
The monitor also records each registration as the engine would see it (URN, parent,
aliases, update-in-place options), so tests can replay the engine's alias matching
(tests/stacks/urns.py).

- ``config(cloud, environment, **overrides)``: a valid stack config;
- ``run(values, stack)``: the program under the mocks, a ``StackRun``;
- ``declared_stack(cloud, values, stack=...)``: the same for callers outside the stack
  tests (the local cloud reads a VM's user data and metadata with it).

The mocks answer ``tls:index/privateKey:PrivateKey`` with a real ED25519 key pair
(``host_key_pair``: derived from the stack and resource name, so every run of one stack
declares the same key), because the local cloud boots hosts from what a stack declares
and their sshd serves that key; and Cloud SQL's ``serverCaCerts`` with a real CA
certificate.

A uniquely named module rather than conftest.py, so it cannot be confused with another
test directory's conftest in one pytest process.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from pulumi.runtime.mocks import MockMonitor

#: Loading a provider module warns once per deprecated class it defines, used or not.
#: Load them here, where no "DeprecationWarning is an error" filter is active, so a
#: test fails only on a deprecation the program itself runs into.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_aws
    import pulumi_gcp
    import pulumi_random
    import pulumi_tls

    for _module in ("compute", "sql", "storage", "serviceaccount", "projects", "servicenetworking"):
        hasattr(getattr(pulumi_gcp, _module), "__loaded__")
    for _module in (
        pulumi_aws.ec2,
        pulumi_aws.iam,
        pulumi_aws.rds,
        pulumi_aws.s3,
        pulumi_aws.vpc,
        pulumi_aws.lb,
        pulumi_aws.acm,
        pulumi_aws.autoscaling,
    ):
        getattr(_module, "__all__", None)
    getattr(pulumi_random, "RandomPassword", None)
    getattr(pulumi_tls, "PrivateKey", None)

PROJECT = "mlflow-server"
EXPIRES_AT = "203001011200"
GCP_PROJECT = "my-project-123"
GCP_REGION = "europe-west1"
GCP_ZONE = "europe-west1-b"
AWS_REGION = "eu-central-1"
AWS_ZONES = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
HTTPS_CIDR = "203.0.113.0/24"
SSH_CIDR = "198.51.100.7/32"
STATIC_IP = "203.0.113.10"
DB_PRIVATE_IP = "10.77.0.3"
DB_ADDRESS = "database-instance-abc1234.cxyz.eu-central-1.rds.amazonaws.com"
AMI_ID = "ami-0debian12fake0001"
RANDOM_HEX = "0a1b2c3d"
INSTANCE_ID = "i-0123456789abcdef0"
#: topology group: the GCP load balancer's global address, the AWS ALB's DNS name.
LB_IP = "203.0.113.80"
ALB_DNS = "lb-alb-0123abc-1234567890.eu-central-1.elb.amazonaws.com"
COMPUTE_API = "https://www.googleapis.com/compute/v1"
#: The GCP types of a group whose URLs (``selfLink``) other resources take.
GCP_LINKED = {
    "gcp:compute/instanceTemplate:InstanceTemplate": "global/instanceTemplates",
    "gcp:compute/healthCheck:HealthCheck": "global/healthChecks",
    "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager": (
        f"regions/{GCP_REGION}/instanceGroupManagers"
    ),
    "gcp:compute/securityPolicy:SecurityPolicy": "global/securityPolicies",
    "gcp:compute/sSLPolicy:SSLPolicy": "global/sslPolicies",
    "gcp:compute/sSLCertificate:SSLCertificate": "global/sslCertificates",
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": "global/sslCertificates",
    "gcp:compute/backendService:BackendService": "global/backendServices",
    "gcp:compute/uRLMap:URLMap": "global/urlMaps",
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy": "global/targetHttpsProxies",
}
#: A password with every character a URI must escape (give it as ``default_password``).
NASTY_PASSWORD = "p@ss:w/rd?x#y%z&a=b+c d"


def public_key(algorithm: str = "ssh-ed25519", comment: str = "ops@example.com") -> str:
    """A well-formed OpenSSH public key line of ``algorithm`` (random-free, not a real key)."""
    blob = len(algorithm).to_bytes(4, "big") + algorithm.encode() + bytes(36)
    return f"{algorithm} {base64.b64encode(blob).decode()} {comment}"


SSH_KEY = public_key()
#: Pulumi's wire envelope for a secret value (sdk/python/lib/pulumi/runtime/rpc.py).
SECRET_SIG, SECRET_MARKER = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: Any) -> bool:
    """Whether a recorded input is a secret (the mocks see secrets in their envelope)."""
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARKER


def revealed(value: Any) -> Any:
    """A recorded input with every secret envelope, at any depth, replaced by its value."""
    if is_secret(value):
        return revealed(value.get("value"))
    if isinstance(value, dict):
        return {key: revealed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [revealed(item) for item in value]
    return value


#: The configuration keys ``run`` marks secret by default, as ``config set --secret`` would.
SECRET_CONFIG = frozenset({f"{PROJECT}:adminPassword", f"{PROJECT}:groupCertificateKeyPem"})


@functools.cache
def certificate_pair(domain: str = "mlflow.example.com") -> tuple[str, str]:
    """A real self-signed certificate for ``domain`` and its key (PEM), for a group's
    provided certificate (``groupCertificatePem``, ``groupCertificateKeyPem``)."""
    return self_signed(
        domain, 90, x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False
    )


def self_signed(
    common_name: str, days: int, extension: x509.ExtensionType, *, critical: bool
) -> tuple[str, str]:
    """A real self-signed certificate with one extension, and its key (PEM each)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(extension, critical=critical)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, private


def group_config(cloud: str = "gcp", environment: str = "dev", **overrides: Any) -> dict[str, str]:
    """A valid ``topology: group`` stack config: a domain for the managed certificate, and
    no SSH CIDRs (the instances are reached through IAP or Session Manager)."""
    values = {"topology": "group", "domain": "mlflow.example.com", "sshAllowedCidrs": None}
    return config(cloud, environment, **{**values, **overrides})


@functools.cache
def host_key_pair(seed: str) -> tuple[str, str]:
    """A real ED25519 key pair (OpenSSH private key, ``ssh-ed25519 AAAA...`` public key),
    the same for the same ``seed``."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


@functools.cache
def database_ca_pem() -> str:
    """A real self-signed CA certificate, standing in for Cloud SQL's server CA."""
    return self_signed(
        "Mock Cloud SQL Server CA",
        3650,
        x509.BasicConstraints(ca=True, path_length=None),
        critical=True,
    )[0]


def config(cloud: str = "gcp", environment: str = "dev", **overrides: Any) -> dict[str, str]:
    """A valid stack config; keys as typed in ``pulumi config set`` (``gcp:region``,
    ``gcpDbTier``); lists and maps are given as Python values; ``None`` removes a key."""
    values: dict[str, Any] = {
        "cloud": cloud,
        "environment": environment,
        "httpsAllowedCidrs": [HTTPS_CIDR],
        "sshPublicKeys": [SSH_KEY],
    }
    if cloud == "gcp":
        values.update({"gcp:project": GCP_PROJECT, "gcp:region": GCP_REGION, "gcp:zone": GCP_ZONE})
    else:
        values.update({"aws:region": AWS_REGION, "sshAllowedCidrs": [SSH_CIDR]})
    if environment == "test":
        values["expiresAt"] = EXPIRES_AT
    values.update(overrides)
    return {
        (key if ":" in key else f"{PROJECT}:{key}"): (
            value if isinstance(value, str) else json.dumps(value)
        )
        for key, value in values.items()
        if value is not None
    }


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str
    custom: bool
    urn: str = ""


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like the clouds would and keeps every registration and invoke."""

    def __init__(
        self,
        zones: list[str] | None = None,
        passwords: dict[str, str] | None = None,
        default_password: str | None = None,
    ):
        """``passwords``: what each RandomPassword (by name) generates; the others generate
        ``default_password``, or as many ``x`` as their length."""
        self.registered: list[Registered] = []
        self.calls: list[tuple[str, dict]] = []
        self.zones = list(AWS_ZONES if zones is None else zones)
        self.passwords = passwords or {}
        self.default_password = default_password

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.registered.append(
            Registered(args.typ, args.name, dict(args.inputs), args.provider or "", args.custom)
        )
        state, typ, resource_id = dict(args.inputs), args.typ, f"{args.name}-id"
        if typ.startswith("gcp:") and "name" not in state:
            state["name"] = f"{args.name}-a1b2c3d"  # Pulumi's auto-naming suffix
        if typ in GCP_LINKED:
            link = f"{COMPUTE_API}/projects/{GCP_PROJECT}/{GCP_LINKED[typ]}/{state['name']}"
            state["selfLink"] = link
            if typ == "gcp:compute/instanceTemplate:InstanceTemplate":
                state["selfLinkUnique"] = f"{link}?uniqueId=1234567890"
            if typ.endswith(":RegionInstanceGroupManager"):
                state["instanceGroup"] = link.replace("instanceGroupManagers", "instanceGroups")
        if typ == "random:index/randomPassword:RandomPassword":
            default = self.default_password or "x" * int(args.inputs["length"])
            state["result"] = self.passwords.get(args.name, default)
        elif typ == "random:index/randomId:RandomId":
            state["hex"] = RANDOM_HEX
        elif typ == "tls:index/privateKey:PrivateKey":
            private, public = host_key_pair(f"{pulumi.get_stack()}/{args.name}")
            # As the provider returns them: the public key with a trailing newline.
            state.update(privateKeyOpenssh=private, publicKeyOpenssh=public + "\n")
        elif typ == "gcp:sql/databaseInstance:DatabaseInstance":
            state["privateIpAddress"] = DB_PRIVATE_IP
            state["connectionName"] = f"{GCP_PROJECT}:{GCP_REGION}:{state['name']}"
            state["serverCaCerts"] = [{"cert": database_ca_pem(), "commonName": "mock-ca"}]
        elif typ == "gcp:serviceaccount/account:Account":
            state["email"] = f"{state['accountId']}@{GCP_PROJECT}.iam.gserviceaccount.com"
            state["member"] = f"serviceAccount:{state['email']}"
            # As GCP names it (pulumi_gcp serviceaccount.Account ``name``: "the
            # fully-qualified name"; its import ID is projects/{project}/serviceAccounts/{email}).
            state["name"] = f"projects/{GCP_PROJECT}/serviceAccounts/{state['email']}"
        elif typ == "gcp:compute/address:Address":
            state["address"] = STATIC_IP
        elif (
            typ == "gcp:compute/globalAddress:GlobalAddress"
            and state.get("addressType") == "EXTERNAL"
        ):
            state["address"] = LB_IP
        elif typ == "aws:s3/bucket:Bucket":
            resource_id = state["bucket"] = f"{args.name}-0a1b2c3"
            state["arn"] = f"arn:aws:s3:::{resource_id}"
        elif typ == "aws:rds/instance:Instance":
            state.update(address=DB_ADDRESS, endpoint=f"{DB_ADDRESS}:5432")
            state.setdefault("identifier", DB_ADDRESS.split(".")[0])
        elif typ == "aws:ec2/eip:Eip":
            state.update(publicIp=STATIC_IP, allocationId="eipalloc-0fake")
        elif typ == "aws:ec2/instance:Instance":
            resource_id = INSTANCE_ID
            state["availabilityZone"] = self.zones[0] if self.zones else ""
        elif typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            state.update(name=f"{args.name}-abc1234", arn=f"arn:aws:iam::123456789012:{args.name}")
        elif typ in ("aws:rds/subnetGroup:SubnetGroup", "aws:rds/parameterGroup:ParameterGroup"):
            state["name"] = f"{args.name}-abc1234"
        elif typ == "aws:ec2/keyPair:KeyPair":
            state["keyName"] = f"{args.name}-abc1234"
        elif typ == "aws:lb/loadBalancer:LoadBalancer":
            state.update(
                dnsName=ALB_DNS,
                arn=f"arn:aws:elasticloadbalancing:{AWS_REGION}:123456789012:loadbalancer/app/{args.name}",
            )
        elif typ == "aws:lb/targetGroup:TargetGroup":
            state["arn"] = (
                f"arn:aws:elasticloadbalancing:{AWS_REGION}:123456789012:targetgroup/{args.name}"
            )
        elif typ == "aws:acm/certificate:Certificate":
            state["arn"] = f"arn:aws:acm:{AWS_REGION}:123456789012:certificate/{args.name}"
        elif typ == "aws:acm/certificateValidation:CertificateValidation":
            state["certificateArn"] = args.inputs["certificateArn"]
        elif typ == "aws:autoscaling/group:Group":
            state["name"] = f"{args.name}-abc1234"
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": self.zones, "zoneIds": [f"euc1-az{i}" for i in range(len(self.zones))]}
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": AMI_ID, "imageId": AMI_ID, "architecture": "x86_64"}
        return {}

    # -- queries --
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

    def named(self, name: str) -> Registered:
        (found,) = [r for r in self.resources if r.name == name]
        return found

    def customs(self) -> list[Registered]:
        """The resources a provider manages (no components)."""
        return [r for r in self.resources if r.custom]

    def provider_tags(self) -> dict[str, str]:
        """The AWS provider's default_tags."""
        return self.provider_input("aws", "defaultTags")["tags"]

    def provider_input(self, cloud: str, key: str) -> Any:
        """A provider input as the program gave it (providers take JSON-encoded values)."""
        value = self.one(f"pulumi:providers:{cloud}").inputs.get(key)
        try:
            return json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return value


ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
LIFECYCLE_OPTIONS = (
    "ignoreChanges",
    "replaceOnChanges",
    "deleteBeforeReplace",
    "protect",
    "retainOnDelete",
)


@dataclass(frozen=True)
class AliasSpec:
    """One ``pulumi.Alias`` as the engine receives it; empty strings are fields not given."""

    name: str = ""
    typ: str = ""
    parent: str = ""
    no_parent: bool = False
    urn: str = ""


@dataclass(frozen=True)
class Registration:
    """A RegisterResource request as the engine sees it: URNs in the engine's own form."""

    urn: str
    typ: str
    name: str
    parent: str
    custom: bool
    aliases: tuple[AliasSpec, ...]
    #: The options that decide between an update in place and a replacement or deletion,
    #: those set: ignoreChanges, replaceOnChanges, deleteBeforeReplace, protect, retainOnDelete.
    lifecycle: dict = field(default_factory=dict)
    #: Outputs the program asked the engine to keep secret (wire names).
    secret_outputs: tuple[str, ...] = ()


def engine_urn(stack: str, parent: str, typ: str, name: str) -> str:
    """The URN the engine gives a resource: its parent's qualified type, unless the parent is
    the root stack (pulumi/pulumi ``pkg/resource/deploy/deployment.go``, ``generateURN``)."""
    qualified = typ
    if parent and parent.split("::")[2] != ROOT_STACK_TYPE:
        qualified = f"{parent.split('::')[2]}${typ}"
    return f"urn:pulumi:{stack}::{PROJECT}::{qualified}::{name}"


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, keeping each request's parent and aliases in the engine's form.

    The mock monitor's own URNs keep only the parent's last type and include the root
    stack's; the engine's do neither, so the recording computes the engine's (below) and
    translates the parents and alias parents it names.
    """

    def __init__(self, mocks: pulumi.runtime.Mocks, stack: str):
        super().__init__(mocks)
        self.stack = stack
        self.registrations: list[Registration] = []
        self._engine: dict[str, str] = {}

    def RegisterResource(self, request):  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)
        if request.type == ROOT_STACK_TYPE:
            self._engine[response.urn] = response.urn
            return response
        parent = self._engine.get(request.parent, request.parent)
        urn = engine_urn(self.stack, parent, request.type, request.name)
        self._engine[response.urn] = urn
        aliases = []
        for alias in request.aliases:
            if alias.HasField("spec"):
                spec = alias.spec
                aliases.append(
                    AliasSpec(
                        name=spec.name,
                        typ=spec.type,
                        parent=self._engine.get(spec.parentUrn, spec.parentUrn),
                        no_parent=spec.noParent,
                    )
                )
            else:
                aliases.append(AliasSpec(urn=alias.urn))
        lifecycle = {
            option: list(value) if option.endswith("Changes") else value
            for option in LIFECYCLE_OPTIONS
            if (value := getattr(request, option))
        }
        self.registrations.append(
            Registration(
                urn,
                request.type,
                request.name,
                parent,
                bool(request.custom),
                tuple(aliases),
                lifecycle,
                tuple(request.additionalSecretOutputs),
            )
        )
        return response


@dataclass
class StackRun:
    """What one run of the program declared and exported."""

    mocks: RecordingMocks
    monitor: RecordingMonitor
    outputs: dict[str, Any] = field(default_factory=dict)
    secret: dict[str, bool] = field(default_factory=dict)

    def __getattr__(self, name: str):
        # run.one(...), run.of_type(...), run.resources read the recording.
        return getattr(self.mocks, name)


def run(
    values: dict[str, str],
    stack: str | None = None,
    mocks: RecordingMocks | None = None,
    secret_keys: list[str] | None = None,
) -> StackRun:
    """Run ``stacks.program.main`` under fresh mocks and config; raises what it raises.

    ``secret_keys``: the config keys stored encrypted; None: those of ``values`` in
    SECRET_CONFIG.

    The program runs inside ``@pulumi.runtime.test``, so an exception in any ``apply``
    fails the caller too, after the outstanding registrations drained (``mocks`` is
    then complete: pass your own to inspect what was registered before a failure).
    """
    from stacks.program import main

    mocks = mocks or RecordingMocks()
    cloud = values.get(f"{PROJECT}:cloud", "gcp")
    stack = stack or f"{cloud}-{values.get(PROJECT + ':environment', 'dev')}"
    if secret_keys is None:
        secret_keys = [key for key in values if key in SECRET_CONFIG]
    pulumi.runtime.set_all_config(values, secret_keys)
    monitor = RecordingMonitor(mocks, stack)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    result = StackRun(mocks, monitor)

    @pulumi.runtime.test
    def program():
        outputs = main()

        async def settle():
            for name, output in outputs.items():
                result.outputs[name] = await output.future()
                result.secret[name] = await output.is_secret()

        return asyncio.ensure_future(settle())

    program()
    return result


def declared_stack(
    cloud: str, values: dict[str, str] | None = None, *, stack: str | None = None
) -> StackRun:
    """What the program declares for ``cloud`` with the stack config ``values`` (engine form,
    as ``config`` builds it; None: the minimal valid dev stack of that cloud).

    ``.resources`` are the registered resources with their inputs (wire names), ``.outputs``
    the stack outputs. The provider SDKs' warnings about their own deprecated classes are
    silenced; the stack tests judge the program's deprecations. For callers outside the
    stack tests, such as the local cloud reading a VM's user data.
    """
    values = config(cloud) if values is None else values
    if values.get(f"{PROJECT}:cloud", cloud) != cloud:
        raise ValueError(f"config for cloud {values[PROJECT + ':cloud']!r}, asked for {cloud!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return run({f"{PROJECT}:cloud": cloud, **values}, stack=stack)
