"""Physical names: what the stacks derive from the stack name, and the clouds' rules for names.

A Pulumi stack name is 1-100 of ``A-Z a-z 0-9 _ . -`` (pulumi/pulumi
``sdk/go/common/tokens/stack_name.go``, ``ParseStackName``). The clouds allow much
less in the names and labels the kit derives from it, so each derived name is the
stack name itself when the cloud allows it as written, and otherwise a readable
slug followed by ``-`` and a hash of the exact stack name. Names of the first kind
never end in ``-<hash>`` (such a stack name is hashed too), so the two kinds cannot
meet, and two different stack names never share a derived name unless 40 bits of
SHA-256 collide. Standard library only: provisioning (teardown, reaper) computes
the same label values without the Pulumi SDK.

The rules below are the clouds' documented ones:
- GCP resource names: RFC 1035, ``[a-z]([-a-z0-9]*[a-z0-9])?``, at most 63
  (https://cloud.google.com/compute/docs/naming-resources).
- GCP service account IDs: 6-30, ``[a-z]([-a-z0-9]*[a-z0-9])`` (IAM
  ``projects.serviceAccounts.create``, ``accountId``).
- GCP label values: at most 63 of lowercase letters, digits, ``_`` and ``-``
  (https://cloud.google.com/compute/docs/labeling-resources#requirements).
- GCS bucket names: 3-63 of ``a-z 0-9 - _ .``, starting and ending with a letter or
  digit, not starting with ``goog`` nor containing ``google``
  (https://cloud.google.com/storage/docs/buckets#naming).
- S3 bucket names: 3-63 of ``a-z 0-9 . -``, starting and ending with a letter or
  digit, no ``..``, not an IP address, none of the reserved prefixes and suffixes
  (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
- RDS instance and snapshot identifiers: 1-63 (instances) or 1-255 (snapshots) of
  letters, digits and hyphens, starting with a letter, no ``--``, not ending in
  ``-`` (RDS API ``CreateDBInstance`` / ``DeleteDBInstance``).
- IAM role and instance profile names: 1-64 and 1-128 of ``\\w+=,.@-`` (IAM API
  ``CreateRole`` / ``CreateInstanceProfile``).
- EC2 key pair names: 1-255 ASCII characters (EC2 API ``ImportKeyPair``).
- GCP managed instance groups name their instances ``<base instance name>-<4
  characters>``: the base is a GCP resource name of at most 58 characters
  (``instanceGroupManagers.insert``, ``baseInstanceName``).
- ELBv2 load balancer and target group names: 1-32 of letters, digits and hyphens
  (ELBv2 API ``CreateLoadBalancer`` / ``CreateTargetGroup``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

#: Hex digits of SHA-256 appended to a name that had to be changed: 40 bits.
HASH_LENGTH = 10
_HASHED_TAIL = re.compile(rf"-[0-9a-f]{{{HASH_LENGTH}}}$")
#: Pulumi's own auto-naming appends ``-`` and seven hex digits to the logical name.
AUTONAME_SUFFIX = "-0123abc"

STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class NameRuleError(ValueError):
    """A physical name breaks its cloud's rule."""

    def __init__(self, kind: str, name: str, rule: str):
        self.kind, self.name, self.rule = kind, name, rule
        super().__init__(f"{kind} {name!r} breaks the cloud's rule: {rule}")


def digest(stack: str) -> str:
    return hashlib.sha256(stack.encode()).hexdigest()[:HASH_LENGTH]


def _derived(stack: str, keep: str, max_length: int, as_is: re.Pattern) -> str:
    """``stack`` when ``as_is`` matches it, else ``<slug>-<hash>`` within ``max_length``.

    ``keep`` is the character class (regex) the slug keeps; every run of other
    characters becomes one ``-``.
    """
    if as_is.fullmatch(stack) and len(stack) <= max_length and not _HASHED_TAIL.search(stack):
        return stack
    slug = re.sub(rf"[^{keep}]+", "-", stack.lower()).strip("-_")
    room = max_length - HASH_LENGTH - 1
    slug = slug[:room].rstrip("-_")
    return f"{slug}-{digest(stack)}" if slug else digest(stack)


def stack_label(stack: str) -> str:
    """The ``mlflow-kit-stack`` label (GCP) / tag (AWS) value of ``stack``."""
    # A hash alone may start with a digit: label values allow that.
    return _derived(stack, "a-z0-9_-", 63, re.compile(r"[a-z0-9_-]{1,63}"))


def service_account_id(stack: str) -> str:
    """``mlflow-<stack>``: a GCP service account ID (6-30) unique per stack name."""
    tail = _derived(stack, "a-z0-9-", 30 - len("mlflow-"), re.compile(r"[a-z0-9-]*[a-z0-9]"))
    return f"mlflow-{tail}"


def gcp_base_instance_name(stack: str) -> str:
    """``mlflow-<stack>``: the names a GCP managed instance group gives its instances
    (``<base>-<4 characters>``), so two stacks' instances never share a name."""
    tail = _derived(
        stack,
        "a-z0-9-",
        GCP_BASE_INSTANCE_NAME_MAX - len("mlflow-"),
        re.compile(r"[a-z0-9-]*[a-z0-9]"),
    )
    return f"mlflow-{tail}"


def rds_slug(stack: str) -> str:
    """The stack name as letters, digits and single hyphens, for RDS identifiers."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", stack.lower())).strip("-") or "stack"


def final_snapshot_identifier(stack: str, suffix: str) -> str:
    """``mlflow-<stack>-final-<suffix>``; ``suffix`` changes with every new database."""
    return f"mlflow-{rds_slug(stack)[:200]}-final-{suffix}"


# --- the clouds' rules --------------------------------------------------------------


def _check(kind: str, name: str, ok: bool, rule: str) -> str:
    if not ok:
        raise NameRuleError(kind, name, rule)
    return name


GCP_NAME_RULE = "[a-z]([-a-z0-9]*[a-z0-9])?, at most 63 characters"
#: A managed instance group appends ``-`` and four characters to its base instance name,
#: and the instance name is a GCP resource name (at most 63).
GCP_BASE_INSTANCE_NAME_MAX = 58
_GCP_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def gcp_resource_name(name: str) -> str:
    return _check(
        "GCP resource name",
        name,
        bool(_GCP_NAME.fullmatch(name)) and len(name) <= 63,
        GCP_NAME_RULE,
    )


def gcp_base_instance_name_rule(name: str) -> str:
    ok = bool(_GCP_NAME.fullmatch(name)) and len(name) <= GCP_BASE_INSTANCE_NAME_MAX
    rule = f"[a-z]([-a-z0-9]*[a-z0-9])?, at most {GCP_BASE_INSTANCE_NAME_MAX} characters"
    return _check("GCP base instance name", name, ok, rule)


def aws_lb_name(name: str) -> str:
    """Load balancer and target group names (ELBv2 API ``CreateLoadBalancer``,
    ``CreateTargetGroup``): 1-32 of letters, digits and hyphens, neither starting nor
    ending with a hyphen, a load balancer's not starting with ``internal-``."""
    ok = bool(
        re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?", name)
    ) and not name.startswith("internal-")
    return _check("ELB name", name, ok, "1-32 of letters, digits and hyphens, not internal-*")


def gcp_service_account_id(name: str) -> str:
    ok = bool(re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])", name)) and 6 <= len(name) <= 30
    return _check("GCP service account ID", name, ok, "6-30 of [a-z0-9-], a letter first")


def gcp_label_value(value: str) -> str:
    ok = bool(re.fullmatch(r"[a-z0-9_-]{0,63}", value))
    return _check("GCP label value", value, ok, "at most 63 of [a-z0-9_-]")


def gcs_bucket_name(name: str) -> str:
    ok = (
        bool(re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", name))
        and not name.startswith("goog")
        and "google" not in name
        and not _is_ip(name)
    )
    return _check("GCS bucket name", name, ok, "3-63 of [a-z0-9._-], no goog prefix")


def s3_bucket_name(name: str) -> str:
    ok = (
        bool(re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name))
        and ".." not in name
        and not _is_ip(name)
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    return _check("S3 bucket name", name, ok, "3-63 of [a-z0-9.-], no reserved prefix")


def rds_identifier(name: str, max_length: int = 63) -> str:
    ok = (
        bool(re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]*", name))
        and "--" not in name
        and not name.endswith("-")
        and len(name) <= max_length
    )
    rule = f"1-{max_length} of letters, digits and single hyphens, a letter first"
    return _check("RDS identifier", name, ok, rule)


def iam_name(name: str, max_length: int = 64) -> str:
    ok = bool(re.fullmatch(r"[\w+=,.@-]+", name, re.ASCII)) and len(name) <= max_length
    return _check("IAM name", name, ok, f"1-{max_length} of letters, digits and +=,.@_-")


def aws_tag_value(value: str) -> str:
    ok = len(value) <= 256 and bool(re.fullmatch(r"[\w .:/=+\-@]*", value))
    return _check("AWS tag value", value, ok, "at most 256 of letters, digits and ' _.:/=+-@'")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
