"""Find and remove GCP resources by the kit's labels, over plain REST.

Cloud Asset Inventory's ``searchAllResources`` answers "everything in this
project with label X" in one paginated call, whatever the service. It is
called through google-auth's ``AuthorizedSession`` (any object with a
requests-style ``get``/``delete`` works, which is how the tests replay recorded
responses). The caller needs ``cloudasset.assets.searchAllResources`` on the
project (roles/cloudasset.viewer) and the Cloud Asset API enabled.

The index is eventually consistent: a resource deleted a moment ago can still
be listed for a few minutes, so callers poll before calling something a leftover
(see ``teardown.verify``). Labels are matched exactly here, because the query's
``:`` operator matches words, and stack names are made of words.

Resources that cannot carry labels (networks, subnets, firewall rules, the
service account) carry the stack in their description instead
(``contract.DESCRIPTION_MARKER``). Looking for one stack therefore also searches
descriptions for the marker, keeps only results whose description contains the
exact marker (a stack ``a-b`` matches the words of stack ``a``), and merges them
with the labelled ones. Resources with neither (IAM grants, the Service Networking
peering, Cloud SQL databases and users) go with their parents and are not searched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from provisioning.teststacks.leftovers import CannotRemove, Leftover
from stacks import contract

ASSET_API = "https://cloudasset.googleapis.com/v1"
COMPUTE_API = "https://compute.googleapis.com/compute/v1"
SQL_API = "https://sqladmin.googleapis.com/v1"
STORAGE_API = "https://storage.googleapis.com/storage/v1"
SECRETS_API = "https://secretmanager.googleapis.com/v1"
TIMEOUT = 60
# Removal order for orphans: a group's load balancer from its forwarding rule inwards
# (each holds the next), then the managed instance group, which would recreate any of
# its VMs removed before it; a VM holds disks and addresses until it is gone; a network
# goes last, after the subnet, the router and everything else attached to it.
_ORDER = (
    "compute global-forwarding-rule",
    "compute target-https-proxy",
    "compute url-map",
    "compute backend-service",
    "compute instance-group-manager",
    "compute instance",
    "sql instance",
    "storage bucket",
)
_LAST = ("compute subnetwork", "compute network")

#: Label filter: label key -> required value, or None for "any value".
LabelFilter = dict[str, str | None]


def session(scopes: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)):
    """An authorized requests session from Application Default Credentials."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=list(scopes))
    return AuthorizedSession(credentials)


def search(http, project: str, query: str) -> Iterator[dict[str, Any]]:
    """Every ``searchAllResources`` result for ``query`` in ``project``, page by page."""
    params = {"query": query, "pageSize": 500}
    while True:
        response = http.get(
            f"{ASSET_API}/projects/{project}:searchAllResources", params=params, timeout=TIMEOUT
        )
        response.raise_for_status()
        body = response.json()
        yield from body.get("results", [])
        token = body.get("nextPageToken")
        if not token:
            return
        params = {**params, "pageToken": token}


def query_for(wanted: LabelFilter) -> str:
    return " AND ".join(
        f"labels.{key}:{value}" if value is not None else f"labels.{key}:*"
        for key, value in wanted.items()
    )


def description_query(marker: str) -> str:
    """A phrase query for ``marker``; it matches words, so results need checking."""
    return f'description:"{marker.strip("[]")}"'


def marked_stack(wanted: LabelFilter) -> str | None:
    """The stack whose description marker to look for too, when ``wanted`` is one stack.

    Other label conditions (environment, expiry) cannot be checked on a resource
    that has no labels, so only a filter on the stack label alone qualifies.
    """
    if set(wanted) == {contract.LABEL_STACK}:
        return wanted[contract.LABEL_STACK]
    return None


def find(http, project: str, wanted: LabelFilter) -> list[Leftover]:
    """Every resource in ``project`` whose labels match ``wanted`` exactly, and, when
    ``wanted`` names one stack, every resource whose description carries its marker."""
    found: dict[str, Leftover] = {}
    for result in search(http, project, query_for(wanted)):
        labels = result.get("labels", {}) or {}
        if all(
            key in labels and (value is None or labels[key] == value)
            for key, value in wanted.items()
        ):
            found.setdefault(result["name"], leftover(result, project))
    stack = marked_stack(wanted)
    if stack is not None:
        marker = contract.DESCRIPTION_MARKER.format(stack=stack)
        for result in search(http, project, description_query(marker)):
            if marker in (result.get("description") or ""):
                found.setdefault(result["name"], leftover(result, project))
    return sorted(found.values(), key=_removal_rank)


def leftover(result: dict[str, Any], project: str) -> Leftover:
    """A search result as a Leftover with the gcloud command that removes it."""
    full_name = result["name"]
    asset_type = result.get("assetType", "")
    service, _, kind = asset_type.partition("/")
    path = full_name.split("/", 3)[3] if full_name.startswith("//") else full_name
    short = path.rsplit("/", 1)[-1]
    parts = path.split("/")
    location = result.get("location", "")
    proj = f"--project {project}"
    label = f"{service.split('.')[0]} {_words(kind)}"
    if service == "compute.googleapis.com":
        command = _compute_command(kind, short, parts, proj)
    elif asset_type == "sqladmin.googleapis.com/Instance":
        command = f"gcloud sql instances delete {short} {proj} --quiet"
        label = "sql instance"
    elif asset_type == "storage.googleapis.com/Bucket":
        command = f"gcloud storage rm --recursive gs://{short}"
    elif asset_type == "secretmanager.googleapis.com/Secret":
        command = f"gcloud secrets delete {short} {proj} --quiet"
    elif asset_type == "iam.googleapis.com/ServiceAccount":
        account = (result.get("additionalAttributes") or {}).get("email") or short
        command = f"gcloud iam service-accounts delete {account} {proj} --quiet"
    else:
        command = f"# no removal command known for {asset_type}; delete {full_name} in the console"
    return Leftover(
        "gcp",
        label,
        short,
        full_name,
        command,
        dict(result.get("labels", {}) or {}),
        state=result.get("state", ""),
        location=location,
    )


def _compute_command(kind: str, short: str, parts: list[str], proj: str) -> str:
    collection = {
        "Instance": "instances",
        "Disk": "disks",
        "Address": "addresses",
        "GlobalAddress": "addresses",
        "Image": "images",
        "Snapshot": "snapshots",
        "ForwardingRule": "forwarding-rules",
        "InstanceTemplate": "instance-templates",
        "Firewall": "firewall-rules",
        "Network": "networks",
        "Subnetwork": "networks subnets",
        # topology: group
        "GlobalForwardingRule": "forwarding-rules",
        "InstanceGroupManager": "instance-groups managed",
        "HealthCheck": "health-checks",
        "BackendService": "backend-services",
        "UrlMap": "url-maps",
        "TargetHttpsProxy": "target-https-proxies",
        "SslCertificate": "ssl-certificates",
        "SslPolicy": "ssl-policies",
        "SecurityPolicy": "security-policies",
        "Router": "routers",
    }.get(kind)
    if collection is None:
        return f"# no removal command known for compute {kind}; delete {'/'.join(parts)}"
    scope = ""
    if "zones" in parts:
        scope = f" --zone {parts[parts.index('zones') + 1]}"
    elif "regions" in parts:
        scope = f" --region {parts[parts.index('regions') + 1]}"
    elif kind in ("GlobalAddress", "ForwardingRule") or "global" in parts:
        # These commands take --global or --region (gcloud compute ... delete --help);
        # instance templates, firewall rules, networks, images and snapshots are global
        # only and take neither.
        scope = " --global" if collection in _GLOBAL_OR_REGIONAL else ""
    command = f"gcloud compute {collection} delete {short}{scope} {proj} --quiet"
    if kind == "Network":
        # The private services peering (Cloud SQL) keeps the network in use until removed.
        peering = (
            f"gcloud services vpc-peerings delete --network {short}"
            f" --service servicenetworking.googleapis.com {proj} --quiet"
        )
        command = f"{peering} && {command}"
    return command


_GLOBAL_OR_REGIONAL = (
    "addresses",
    "forwarding-rules",
    "health-checks",
    "backend-services",
    "url-maps",
    "target-https-proxies",
    "ssl-certificates",
    "ssl-policies",
    "security-policies",
)


def _words(kind: str) -> str:
    out = "".join(f" {c.lower()}" if c.isupper() else c for c in kind).strip()
    return out.replace(" ", "-")


def _removal_rank(item: Leftover) -> tuple[int, str]:
    if item.kind in _ORDER:
        rank = _ORDER.index(item.kind)
    elif item.kind in _LAST:
        rank = len(_ORDER) + 1 + _LAST.index(item.kind)
    else:
        rank = len(_ORDER)
    return rank, item.name


# --- removal, for orphans the reaper finds ----------------------------------------


def remove(http, item: Leftover) -> None:
    """Delete one leftover with its service's REST API (asynchronous where GCP is)."""
    path = item.ident.split("/", 3)[3] if item.ident.startswith("//") else ""
    host = item.ident[2:].split("/", 1)[0] if item.ident.startswith("//") else ""
    if host == "compute.googleapis.com":
        url = f"{COMPUTE_API}/{path}"
    elif host == "cloudsql.googleapis.com":
        url = f"{SQL_API}/{path}"
    elif host == "secretmanager.googleapis.com":
        url = f"{SECRETS_API}/{path}"
    elif host == "storage.googleapis.com":
        _empty_bucket(http, path)
        url = f"{STORAGE_API}/b/{path}"
    else:
        raise CannotRemove(f"no automatic removal for {item.describe()}; {item.remove_command}")
    response = http.delete(url, timeout=TIMEOUT)
    if response.status_code != 404:  # already gone is what we wanted
        response.raise_for_status()


def _empty_bucket(http, bucket: str) -> None:
    params: dict[str, Any] = {"versions": "true", "fields": "items(name,generation),nextPageToken"}
    while True:
        response = http.get(f"{STORAGE_API}/b/{bucket}/o", params=params, timeout=TIMEOUT)
        response.raise_for_status()
        body = response.json()
        for obj in body.get("items", []):
            http.delete(
                f"{STORAGE_API}/b/{bucket}/o/{quote(obj['name'], safe='')}",
                params={"generation": obj["generation"]},
                timeout=TIMEOUT,
            ).raise_for_status()
        if not body.get("nextPageToken"):
            return
        params = {**params, "pageToken": body["nextPageToken"]}
