"""Physical names derived from stack names: valid for the cloud, and never shared."""

from __future__ import annotations

import random
import string

import pytest

from stacks import contract, naming

pytestmark = pytest.mark.unit
ALPHABET = string.ascii_letters + string.digits + "_.-"
ADVERSARIAL = [
    "Team_A.Prod",
    "team_a-prod",
    "TEAM_A.PROD",
    "team_a.prod",
    "ml__prod",
    "ml--prod",
    "ml_-prod",
    "a" * 100,
    "a" * 99 + "b",
    "a" * 99 + "A",
    ".",
    "-",
    "_",
    "..",
    "0",
    "gcp-dev",
    # Stack names that look like a derived name: hashed too, so they cannot meet one.
    f"team_a-prod-{naming.digest('Team_A.Prod')}",
    f"ci-1234-{naming.digest('CI_1234')}",
    "CI_1234",
]


def random_stacks(count: int, seed: int = 20250131) -> list[str]:
    rng = random.Random(seed)
    names = set()
    while len(names) < count:
        length = rng.choice([1, 2, 3, 8, 20, 30, 50, 63, 64, 99, 100, rng.randint(1, 100)])
        names.add("".join(rng.choice(ALPHABET) for _ in range(length)))
    return sorted(names)


STACKS = sorted(set(random_stacks(1000) + ADVERSARIAL))


def derived(stack: str) -> dict[str, str]:
    label = naming.stack_label(stack)
    return {
        "label": naming.gcp_label_value(label),
        "service account": naming.gcp_service_account_id(naming.service_account_id(stack)),
        "final snapshot": naming.rds_identifier(
            naming.final_snapshot_identifier(stack, "0a1b2c3d"), 255
        ),
        "marker": contract.DESCRIPTION_MARKER.format(stack=label),
        "name tag": naming.aws_tag_value(f"{stack}-network-vpc"),
    }


def test_every_valid_stack_name_gives_valid_names_and_no_two_share_one():
    assert len(STACKS) >= 1000
    for stack in STACKS:
        assert naming.STACK_NAME.match(stack)
    by_kind: dict[str, dict[str, str]] = {}
    for stack in STACKS:
        for kind, name in derived(stack).items():
            other = by_kind.setdefault(kind, {}).setdefault(name, stack)
            if kind in ("label", "service account", "marker"):
                assert other == stack, f"{kind} {name!r} shared by {other!r} and {stack!r}"


def test_names_the_cloud_allows_stay_as_they_are():
    assert naming.stack_label("gcp-dev") == "gcp-dev"
    assert naming.stack_label("ml__prod") == "ml__prod"
    assert naming.service_account_id("gcp-dev") == "mlflow-gcp-dev"
    assert naming.stack_label("Team_A.Prod") == f"team_a-prod-{naming.digest('Team_A.Prod')}"


@pytest.mark.parametrize(
    ("rule", "bad"),
    [
        (naming.gcp_resource_name, "1abc"),
        (naming.gcp_resource_name, "a" * 64),
        (naming.gcp_resource_name, "abc-"),
        (naming.gcp_service_account_id, "short"),
        (naming.gcp_service_account_id, "a" * 31),
        (naming.gcp_label_value, "Upper"),
        (naming.gcs_bucket_name, "goog-bucket"),
        (naming.gcs_bucket_name, "my-google-bucket"),
        (naming.s3_bucket_name, "a..b"),
        (naming.s3_bucket_name, "192.168.5.4"),
        (naming.s3_bucket_name, "xn--bucket"),
        (naming.rds_identifier, "a--b"),
        (naming.rds_identifier, "1abc"),
        (naming.rds_identifier, "abc-"),
        (naming.iam_name, "a" * 65),
        (naming.iam_name, "role name"),
        (naming.aws_tag_value, "x" * 257),
    ],
)
def test_the_rules_refuse_what_the_clouds_refuse(rule, bad):
    with pytest.raises(naming.NameRuleError):
        rule(bad)
