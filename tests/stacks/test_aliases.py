"""A stack deployed by an earlier version of the program is updated in place, never replaced.

``recorded/urns-<cloud>.json`` holds the URNs (and inputs) of every resource the programs
declared before their components were renamed alike and the admin password moved
(tests/stacks/urns.py). For each recorded configuration, today's program runs under the
mocks and the engine's matching is replayed: every old URN must be taken over by exactly
one new resource, by its own URN or through an alias, with nothing deleted; the only
resources created are those added since (``ADDED``: new URNs that replace nothing), and
every resource keeps exactly the inputs it had but for the changes listed in
``CHANGED``, each one that its provider applies in place.
"""

from __future__ import annotations

import functools
import json

import pytest
from stack_harness import AliasSpec, Registration
from urns import RECORDED, inputs_by_urn, resolve, run_variant

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]
PROJECT = "mlflow-server"
RECORDINGS = {
    cloud: json.loads((RECORDED / f"urns-{cloud}.json").read_text()) for cloud in ("gcp", "aws")
}
CASES = [(cloud, variant) for cloud, variants in RECORDINGS.items() for variant in variants]
#: How many old URNs each cloud's recording holds, and how many of them today's program
#: reaches only through an alias: AWS's renamed component types (Security -> Firewall,
#: Vm -> Server) with their children, and its admin password, moved into the Server.
EXPECTED = {
    "gcp": {"urns": 79, "by_alias": 0},
    "aws": {"urns": 144, "by_alias": 46},
}


#: Resources added since the recording, by type and name under their component: the
#: SSH host key the stack generates (state only, nothing in the cloud) and, on GCP, the
#: service account's grant to sign as itself (a new binding, nothing replaced).
ADDED = {
    "gcp": [
        "mlflow-server:gcp:Identity$gcp:serviceaccount/iAMMember:IAMMember"
        "::mlflow-identity-sign-as-itself",
        "mlflow-server:gcp:Server$tls:index/privateKey:PrivateKey::mlflow-vm-host-key",
    ],
    "aws": ["mlflow-server:aws:Server$tls:index/privateKey:PrivateKey::vm-host-key"],
}
#: Inputs changed since the recording, per resource name, as paths into its inputs; each
#: is updated in place by its provider, as its SDK documents:
#: - GCP instance ``metadata`` (the ``startup-script`` key, not ``metadata_startup_script``,
#:   which "forces the instance to be recreated" per pulumi_gcp.compute.Instance): set on
#:   the running VM;
#: - Cloud SQL ``settings.ipConfiguration.serverCaMode``: a settings patch of the instance;
#: - EC2 ``userData``: "Updates to this field will trigger a stop/start of the EC2 instance
#:   by default" (pulumi_aws.ec2.Instance), a replacement only with
#:   ``user_data_replace_on_change``, which the program never sets (pinned below);
#: - IAM role policy ``policy`` (s3:AbortMultipartUpload added): IAM's PutRolePolicy
#:   overwrites an inline policy of the same name, and the provider's update is that
#:   call (terraform-provider-aws ``aws_iam_role_policy``: Update is PutRolePolicy).
CHANGED = {
    "gcp": {
        "mlflow-vm-instance": {"metadata.startup-script", "metadata.ssh-host-ed25519-key"},
        "mlflow-db-instance": {"settings.ipConfiguration.serverCaMode"},
    },
    "aws": {"vm-instance": {"userData"}, "identity-artifacts": {"policy"}},
}


#: Pulumi's wire envelope for a secret value (sdk/python/lib/pulumi/runtime/rpc.py): a
#: value made secret is the same input to its provider.
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def changed_paths(old, new, prefix: str = "") -> set[str]:
    """The paths (``a.b.c``) at which two input documents differ, secret or not."""
    old, new = (v["value"] if isinstance(v, dict) and SECRET_SIG in v else v for v in (old, new))
    if isinstance(old, dict) and isinstance(new, dict):
        paths: set[str] = set()
        for key in old.keys() | new.keys():
            path = f"{prefix}.{key}" if prefix else key
            if key not in old or key not in new:
                paths.add(path)
            else:
                paths |= changed_paths(old[key], new[key], path)
        return paths
    return set() if old == new else {prefix}


def renamed_or_moved(old: str) -> bool:
    """An old URN whose resource was renamed or moved: the ones an alias must reach."""
    qualified = old.split("::")[2]
    return qualified.startswith(("mlflow-server:aws:Security", "mlflow-server:aws:Vm")) or (
        qualified == "random:index/randomPassword:RandomPassword"
        and old.endswith("::admin-password")
    )


@functools.cache
def replay(cloud: str, variant_id: str):
    """Today's program for one recorded configuration, and the engine's matching of it."""
    (variant,) = [v for v in RECORDINGS[cloud] if v["id"] == variant_id]
    run = run_variant(cloud, variant)
    return run, resolve(variant["urns"], run.monitor.registrations, variant["stack"], PROJECT)


@pytest.mark.parametrize(("cloud", "variant"), CASES, ids=[f"{c}-{v['id']}" for c, v in CASES])
def test_every_deployed_resource_is_taken_over_in_place(cloud, variant):
    run, result = replay(cloud, variant["id"])
    assert result.errors == []
    assert result.deleted(variant["urns"]) == []
    added = [f"urn:pulumi:{variant['stack']}::{PROJECT}::{urn}" for urn in ADDED[cloud]]
    assert sorted(result.created) == sorted(added)
    assert len(result.taken) == len(variant["urns"]) == len(run.monitor.registrations) - len(added)
    # Exactly the renamed and moved resources are reached through an alias; all others
    # keep their URN.
    assert sorted(result.by_alias.values()) == [u for u in variant["urns"] if renamed_or_moved(u)]


@pytest.mark.parametrize(("cloud", "variant"), CASES, ids=[f"{c}-{v['id']}" for c, v in CASES])
def test_every_resource_keeps_its_inputs_but_for_changes_made_in_place(cloud, variant):
    run, result = replay(cloud, variant["id"])
    now = inputs_by_urn(run)
    changed = {
        old.rsplit("::", 1)[1]: changed_paths(variant["inputs"][old], now[new])
        for old, new in result.taken.items()
        if now[new] != variant["inputs"][old]
    }
    assert changed == CHANGED[cloud]
    if cloud == "aws":
        (instance,) = [new for new in now if new.endswith("::vm-instance")]
        assert "userDataReplaceOnChange" not in now[instance]


#: Per cloud, the only resources whose options decide differently between an update in
#: place and a replacement: a newer Debian image does not replace the AWS VM, and a
#: changed description (set only at creation on GCP) does not replace the VPC and subnet.
LIFECYCLE = {
    "gcp": {
        "mlflow-network-vpc": {"ignoreChanges": ["description"]},
        "mlflow-network-subnet": {"ignoreChanges": ["description"]},
    },
    "aws": {"vm-instance": {"ignoreChanges": ["ami"]}},
}


@pytest.mark.parametrize(("cloud", "variant"), CASES, ids=[f"{c}-{v['id']}" for c, v in CASES])
def test_only_these_resources_ignore_changes_and_none_is_replaced_first(cloud, variant):
    run, _ = replay(cloud, variant["id"])
    options = {r.name: r.lifecycle for r in run.monitor.registrations if r.lifecycle}
    assert options == LIFECYCLE[cloud]


@pytest.mark.parametrize("cloud", list(RECORDINGS))
def test_the_recording_and_the_aliases_used_are_counted(cloud):
    variants = RECORDINGS[cloud]
    by_alias = sum(len(replay(cloud, v["id"])[1].by_alias) for v in variants)
    assert {"urns": sum(len(v["urns"]) for v in variants), "by_alias": by_alias} == EXPECTED[cloud]


# --- the replay itself -------------------------------------------------------------------

STACK = "dev"
ROOT = f"urn:pulumi:{STACK}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{STACK}"


def urn(qualified: str, name: str) -> str:
    return f"urn:pulumi:{STACK}::{PROJECT}::{qualified}::{name}"


def registration(qualified: str, name: str, parent: str = "", *aliases: AliasSpec) -> Registration:
    return Registration(
        urn(qualified, name), qualified.split("$")[-1], name, parent or ROOT, True, aliases
    )


def test_a_renamed_component_without_an_alias_replaces_it_and_its_children():
    olds = [urn("my:m:Old", "app"), urn("my:m:Old$aws:s3/bucket:Bucket", "app-bucket")]
    component = registration("my:m:New", "app")
    child = registration("my:m:New$aws:s3/bucket:Bucket", "app-bucket", component.urn)
    result = resolve(olds, [component, child], STACK, PROJECT)
    assert result.created == [component.urn, child.urn]
    assert result.deleted(olds) == sorted(olds)


def test_an_aliased_component_carries_its_children_by_their_old_names():
    """pulumi/pulumi step_generator.go inheritedChildAlias: "newapp-function" under a
    parent aliased from "app" is found as "app-function" under the old parent URN."""
    olds = [urn("my:m:Old", "app"), urn("my:m:Old$aws:s3/bucket:Bucket", "app-function")]
    component = registration("my:m:New", "newapp", "", AliasSpec(name="app", typ="my:m:Old"))
    child = registration("my:m:New$aws:s3/bucket:Bucket", "newapp-function", component.urn)
    result = resolve(olds, [component, child], STACK, PROJECT)
    assert result.taken == {olds[0]: component.urn, olds[1]: child.urn}
    assert result.created == [] and result.errors == []


def test_a_resource_moved_out_of_the_root_needs_an_alias_naming_no_parent():
    old = urn("random:index/randomPassword:RandomPassword", "admin-password")
    component = registration("my:m:Server", "vm")
    typ = "my:m:Server$random:index/randomPassword:RandomPassword"
    without = registration(typ, "vm-admin-password", component.urn)
    assert resolve([old], [component, without], STACK, PROJECT).created == [
        component.urn,
        without.urn,
    ]
    moved = registration(
        typ, "vm-admin-password", component.urn, AliasSpec(name="admin-password", no_parent=True)
    )
    assert resolve([old], [component, moved], STACK, PROJECT).taken == {old: moved.urn}


def test_claiming_an_old_urn_twice_or_another_resources_urn_is_an_error():
    old = urn("my:m:T", "a")
    first = registration("my:m:T", "b", "", AliasSpec(name="a"))
    second = registration("my:m:T", "c", "", AliasSpec(name="a"))
    taken_by_own_urn = registration("my:m:T", "a")
    assert resolve([old], [first], STACK, PROJECT).errors == []
    assert resolve([old], [first, second], STACK, PROJECT).errors == [
        f"{old} claimed by {first.urn} and {second.urn}"
    ]
    assert (
        resolve([old], [first, taken_by_own_urn], STACK, PROJECT)
        .errors[0]
        .startswith(f"{first.urn} claims {old}")
    )
