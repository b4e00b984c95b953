"""Stand-ins for the two cloud CLIs a group stack is listed with (provisioning.group_instances).

Each is a runner: it takes the argv the kit would run and answers as the real CLI does,
and is strict where the real one is: an option the real command does not take is
refused as the real CLI refuses it (exit 2 for gcloud, 252 for the AWS CLI v2).

``gcloud compute instance-groups managed list-instances`` (its reference page,
cloud.google.com/sdk/gcloud/reference/compute/instance-groups/managed/list-instances):
NAME, at most one of ``--region`` / ``--zone``, ``--filter``, ``--limit``,
``--page-size``, ``--sort-by``, ``--uri`` and the gcloud-wide flags. With
``--format=json`` it prints the ManagedInstance resources as a JSON list (Compute
Engine API, ``regionInstanceGroupManagers.listManagedInstances``; ``ManagedInstance``:
``instance``, ``id``, ``name``, ``instanceStatus``, ``currentAction``, ``version``,
``instanceHealth``). Without ``--format=json`` it prints a table, as the real one does.

``aws autoscaling describe-auto-scaling-groups``: its options are the request
members of botocore's service model (``AutoScalingGroupNamesType``), spelt as the CLI
spells them (``botocore.xform_name(member, "-")``, as awscli does), the CLI's paging options
and its global options; the answer is checked against the model's response shape
(``AutoScalingGroupsType``) with botocore's own validator, so a field the real
service does not send, or one it must, fails the test. A name it does not know gives
an empty ``AutoScalingGroups`` list and exit 0, as the real service does.

What the real CLIs do that these do not (gaps):
- gcloud: authentication and permissions (``compute.instanceGroupManagers.list``), its
  interactive region prompt, ``--filter`` / ``--sort-by`` evaluation, pages of a group
  whose ``listManagedInstancesResults`` is PAGINATED, and a URI given as NAME;
- aws: credentials, ``--query``, paging (``NextToken``, ``--max-items``), several group
  names at once, ``--filters``;
- both: the time they take, throttling, and the exact wording of their errors beyond
  the first line.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import botocore
from botocore import xform_name
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

from provisioning.group_instances import Completed

COMPUTE = "https://www.googleapis.com/compute/v1"
LIST_INSTANCES = ["compute", "instance-groups", "managed", "list-instances"]
GCLOUD_OWN = {"--region", "--zone", "--filter", "--limit", "--page-size", "--sort-by"}
GCLOUD_BOOLEAN = {"--uri", "--quiet", "-q", "--log-http", "--user-output-enabled", "--help"}
#: The gcloud-wide flags that take a value (gcloud topic / any command's reference page).
GCLOUD_WIDE = {
    "--access-token-file", "--account", "--billing-project", "--configuration",
    "--flags-file", "--flatten", "--format", "--impersonate-service-account", "--project",
    "--trace-token", "--verbosity",
}  # fmt: skip


def managed_instance(
    project: str, zone: str, name: str, status: str | None = "RUNNING", action: str = "NONE"
) -> dict:
    """One ManagedInstance as the API returns it; ``status`` None: not created yet (the
    API leaves ``instanceStatus`` out while the instance does not exist)."""
    item = {
        "currentAction": action,
        "id": str(abs(hash(name)) % 10**18),
        "instance": f"{COMPUTE}/projects/{project}/zones/{zone}/instances/{name}",
        "name": name,
        "version": {
            "instanceTemplate": f"{COMPUTE}/projects/{project}/global/instanceTemplates/t-1",
            "name": "primary",
        },
    }
    if status is not None:
        item["instanceStatus"] = status
    return item


@dataclass
class Gcloud:
    """``gcloud compute instance-groups managed list-instances`` over ``groups``:
    ``{(project, region, name): [ManagedInstance, ...]}``."""

    groups: dict[tuple[str, str, str], list[dict]]
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> Completed:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:1] != ["gcloud"] or argv[1:5] != LIST_INSTANCES:
            return Completed(2, "", f"ERROR: (gcloud) Invalid choice: {' '.join(argv[1:5])!r}.")
        command = "(gcloud.compute.instance-groups.managed.list-instances)"
        flags: dict[str, str | bool] = {}
        positional: list[str] = []
        words = iter(argv[5:])
        for word in words:
            name, eq, value = word.partition("=")
            if not name.startswith("-"):
                positional.append(word)
            elif name in GCLOUD_BOOLEAN and not eq:
                flags[name] = True
            elif name in GCLOUD_OWN | GCLOUD_WIDE:
                flags[name] = value if eq else next(words, "")
            else:
                return Completed(2, "", f"ERROR: {command} unrecognized arguments: {word}")
        if len(positional) != 1:
            return Completed(2, "", f"ERROR: {command} argument NAME: Must be specified.")
        if "--region" in flags and "--zone" in flags:
            return Completed(
                2, "", f"ERROR: {command} argument --region: At most one of --region | --zone "
                "may be specified."
            )  # fmt: skip
        key = (str(flags.get("--project", "")), str(flags.get("--region", "")), positional[0])
        if key not in self.groups:
            project, region, name = key
            return Completed(
                1, "", f"ERROR: {command} Could not fetch resource:\n - The resource "
                f"'projects/{project}/regions/{region}/instanceGroupManagers/{name}' was not found\n"
            )  # fmt: skip
        instances = self.groups[key]
        if flags.get("--format") != "json":
            rows = ["NAME  ZONE  STATUS  HEALTH_STATE  ACTION  INSTANCE_TEMPLATE  VERSION_NAME"]
            return Completed(0, "\n".join(rows) + "\n", "")
        return Completed(0, json.dumps(instances, indent=2) + "\n", "")


def _autoscaling() -> ServiceModel:
    root = Path(botocore.__file__).parent / "data" / "autoscaling" / "2011-01-01"
    with gzip.open(root / "service-2.json.gz") as handle:
        return ServiceModel(json.load(handle), "autoscaling")


MODEL = _autoscaling()
OPERATION = MODEL.operation_model("DescribeAutoScalingGroups")
#: The CLI's own options for the operation: its request members, kebab-cased.
AWS_OPTIONS = {"--" + xform_name(m, "-") for m in OPERATION.input_shape.members}
#: Paging options the CLI adds to an operation that pages, and its global options.
AWS_PAGING = {"--max-items", "--starting-token", "--page-size"}
AWS_GLOBAL = {
    "--region", "--output", "--query", "--profile", "--endpoint-url", "--color",
    "--cli-read-timeout", "--cli-connect-timeout", "--ca-bundle", "--cli-binary-format",
}  # fmt: skip
AWS_BOOLEAN = {"--debug", "--no-verify-ssl", "--no-paginate", "--no-sign-request", "--no-cli-pager"}


def asg_instance(instance_id: str, zone: str, state="InService", health="Healthy") -> dict:
    """One member of ``Instances`` (botocore shape ``Instance``; examples-1.json)."""
    return {
        "AvailabilityZone": zone,
        "HealthStatus": health,
        "InstanceId": instance_id,
        "InstanceType": "t3.medium",
        "LaunchTemplate": {
            "LaunchTemplateId": "lt-0a1b2c3d4e5f67890",
            "LaunchTemplateName": "group-template-abc1234",
            "Version": "1",
        },
        "LifecycleState": state,
        "ProtectedFromScaleIn": False,
    }


def asg(name: str, region: str, instances: list[dict], desired: int) -> dict:
    """One AutoScalingGroup as describe-auto-scaling-groups returns it (examples-1.json)."""
    return {
        "AutoScalingGroupARN": f"arn:aws:autoscaling:{region}:123456789012:autoScalingGroup:"
        f"12345678-1234-1234-1234-123456789012:autoScalingGroupName/{name}",
        "AutoScalingGroupName": name,
        "AvailabilityZones": [f"{region}a", f"{region}b"],
        "CreatedTime": "2026-01-09T22:15:11.611Z",
        "DefaultCooldown": 300,
        "DesiredCapacity": desired,
        "HealthCheckGracePeriod": 300,
        "HealthCheckType": "EC2",
        "Instances": instances,
        "MaxSize": desired,
        "MinSize": desired,
        "NewInstancesProtectedFromScaleIn": False,
        "TargetGroupARNs": [],
        "VPCZoneIdentifier": "subnet-5ea0c127,subnet-6194ea3b",
    }


@dataclass
class Aws:
    """``aws autoscaling describe-auto-scaling-groups`` over ``groups``:
    ``{(region, name): AutoScalingGroup}``."""

    groups: dict[tuple[str, str], dict]
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> Completed:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] != ["aws", "autoscaling", "describe-auto-scaling-groups"]:
            return Completed(252, "", f"aws: error: argument operation: Invalid choice: {argv}")
        flags: dict[str, list[str] | bool] = {}
        words = argv[3:]
        index = 0
        while index < len(words):
            word = words[index]
            if word in AWS_BOOLEAN:
                flags[word] = True
            elif word in AWS_OPTIONS | AWS_PAGING | AWS_GLOBAL:
                values = []
                while index + 1 < len(words) and not words[index + 1].startswith("--"):
                    index += 1
                    values.append(words[index])
                flags[word] = values
            else:
                return Completed(252, "", f"\nUnknown options: {word}\n")
            index += 1
        region = flags.get("--region") or [""]
        names = flags.get("--auto-scaling-group-names") or []
        if flags.get("--output", ["json"]) != ["json"]:
            return Completed(0, "AUTOSCALINGGROUPS\t...\n", "")
        found = [self.groups[(region[0], n)] for n in names if (region[0], n) in self.groups]
        document = {"AutoScalingGroups": found}
        errors = ParamValidator().validate(document, OPERATION.output_shape)
        assert not errors.has_errors(), errors.generate_report()
        return Completed(0, json.dumps(document, indent=4) + "\n", "")
