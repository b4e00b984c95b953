"""Run the real Pulumi program under recording mocks and hand back what it declared."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pulumi

from stacks.program import main

REGION = "eu-central-1"
ZONES = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
AMI_ID = "ami-0debian12fake0001"
ELASTIC_IP = "203.0.113.10"
DB_ADDRESS = "database-instance-abc1234.cxyz.eu-central-1.rds.amazonaws.com"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2Uga2V5IGZvciB0aGUgYXdzIHN0YWNrIHRlc3Rz operator@example"
HTTPS_CIDR = "203.0.113.0/24"
SSH_CIDR = "198.51.100.7/32"

#: A minimal valid dev stack; tests override single keys.
BASE_CONFIG = {
    "mlflow-server:cloud": "aws",
    "mlflow-server:environment": "dev",
    "mlflow-server:httpsAllowedCidrs": json.dumps([HTTPS_CIDR]),
    "mlflow-server:sshAllowedCidrs": json.dumps([SSH_CIDR]),
    "mlflow-server:sshPublicKeys": json.dumps([SSH_KEY]),
    "mlflow-server:labels": json.dumps({"team": "ml-platform"}),
    "aws:region": REGION,
}
TEST_EXPIRY = "203001011200"
#: What the mocked RandomId answers (4 bytes as hex).
RANDOM_HEX = "0a1b2c3d"


def config(environment: str = "dev", **overrides: str | None) -> dict[str, str]:
    """BASE_CONFIG for ``environment``; an override of None removes the key.

    Keys are given without namespace for the project (``awsDbMultiAz="false"``) or
    with it for providers (``**{"aws:region": "x"}``).
    """
    values = dict(BASE_CONFIG, **{"mlflow-server:environment": environment})
    if environment == "test":
        values["mlflow-server:expiresAt"] = TEST_EXPIRY
    for key, value in overrides.items():
        full = key if ":" in key else f"mlflow-server:{key}"
        if value is None:
            values.pop(full, None)
        else:
            values[full] = value
    return values


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict
    provider: str | None
    custom: bool


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Records every registration and invoke; answers with plausible cloud values."""

    passwords: dict[str, str] = field(default_factory=dict)
    zones: list[str] = field(default_factory=lambda: list(ZONES))
    resources: list[Registered] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(
            Registered(args.typ, args.name, dict(args.inputs), args.provider, bool(args.custom))
        )
        outputs = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ == "aws:s3/bucket:Bucket":
            resource_id = outputs["bucket"] = f"{args.name}-0a1b2c3"
            outputs["arn"] = f"arn:aws:s3:::{resource_id}"
        elif args.typ == "aws:rds/instance:Instance":
            outputs.update(address=DB_ADDRESS, endpoint=f"{DB_ADDRESS}:5432")
        elif args.typ == "aws:ec2/eip:Eip":
            outputs.update(publicIp=ELASTIC_IP, allocationId="eipalloc-0fake")
        elif args.typ == "random:index/randomId:RandomId":
            outputs["hex"] = RANDOM_HEX
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = self.passwords.get(args.name, "x" * int(args.inputs["length"]))
        elif args.typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            outputs.update(
                name=f"{args.name}-abc1234", arn=f"arn:aws:iam::123456789012:{args.name}"
            )
        elif args.typ in (
            "aws:rds/subnetGroup:SubnetGroup",
            "aws:rds/parameterGroup:ParameterGroup",
        ):
            outputs["name"] = f"{args.name}-abc1234"
        elif args.typ == "aws:ec2/keyPair:KeyPair":
            outputs["keyName"] = f"{args.name}-abc1234"
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": self.zones, "zoneIds": [f"euc1-az{i}" for i in range(len(self.zones))]}
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": AMI_ID, "imageId": AMI_ID, "architecture": "x86_64"}
        return {}

    # -- queries used by the tests --
    def aws_resources(self) -> list[Registered]:
        return [r for r in self.resources if r.custom]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def provider_tags(self) -> dict[str, str]:
        """The AWS provider's default_tags (provider inputs travel JSON-encoded)."""
        value = self.one("pulumi:providers:aws").inputs["defaultTags"]
        return (json.loads(value) if isinstance(value, str) else value)["tags"]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]


@dataclass
class StackRun:
    mocks: RecordingMocks
    outputs: dict[str, object]
    secret: dict[str, bool]


def run_stack(
    values: dict[str, str], *, stack: str = "aws-dev", mocks: RecordingMocks | None = None
) -> StackRun:
    """Run stacks.program.main() under mocks with ``values`` as the stack's config.

    Raises what the program raises (after Pulumi has drained its outstanding
    registrations, so ``mocks.resources`` is complete either way).
    """
    mocks = mocks or RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlflow-server", stack=stack, preview=False)
    pulumi.runtime.set_all_config(values, [])
    resolved: dict[str, tuple[object, bool]] = {}

    @pulumi.runtime.test
    def program():
        outputs = main()

        async def resolve():
            for name, output in outputs.items():
                resolved[name] = (await output.future(), await output.is_secret())

        return asyncio.ensure_future(resolve())

    program()
    return StackRun(
        mocks=mocks,
        outputs={k: v for k, (v, _) in resolved.items()},
        secret={k: s for k, (_, s) in resolved.items()},
    )
