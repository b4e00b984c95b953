"""GCP leftover check and orphan removal, against recorded Cloud Asset responses."""

from __future__ import annotations

import pytest
from invoke import Context
from invoke.exceptions import Exit

from provisioning import stack_tasks
from provisioning.teststacks import gcp, teardown
from teststacks.recorded_gcp import RecordedSession

pytestmark = pytest.mark.unit
STACK = "test-alice-202501310800"
PROJECT = "mlflow-ci-1234"
LABEL_QUERY = f"labels.mlflow-kit-stack:{STACK}"
DESCRIPTION_QUERY = f'description:"mlflow-kit-stack={STACK}"'


def gcp_config(environment="test"):
    return {
        "cloud": "gcp",
        "environment": environment,
        "expiresAt": "202501311200",
        "gcp:project": PROJECT,
        "httpsAllowedCidrs": '["203.0.113.0/24"]',
    }


def test_search_follows_pages_and_matches_the_stack_label_exactly():
    http = RecordedSession("gcp_search_stack_leftovers.json")
    found = gcp.find(http, PROJECT, teardown.stack_filter(STACK))
    assert sorted(item.name for item in found) == [
        "mlflow-artifacts-3c4d5e",
        "mlflow-db-0b9e4f1",
        "mlflow-ip-91f0aa",
        "mlflow-vm-5d1c2e7",
        "mlflow-vm-5d1c2e7",
    ]
    # the bucket of stack "<STACK>-b" matched the word query but is not this stack's
    assert all(item.stack == STACK for item in found)
    queries = [r[2]["query"] for r in http.requests if r[0] == "GET"]
    assert queries == [LABEL_QUERY, LABEL_QUERY, DESCRIPTION_QUERY]
    assert found[0].kind == "compute instance"  # the VM goes first: it holds disk and address


def test_each_leftover_has_the_gcloud_command_that_removes_it():
    http = RecordedSession("gcp_search_stack_leftovers.json")
    commands = {
        item.kind: item.remove_command
        for item in gcp.find(http, PROJECT, teardown.stack_filter(STACK))
    }
    zone, region, quiet = (
        "--zone europe-west1-b",
        "--region europe-west1",
        f"--project {PROJECT} --quiet",
    )
    assert commands == {
        "compute instance": f"gcloud compute instances delete mlflow-vm-5d1c2e7 {zone} {quiet}",
        "compute disk": f"gcloud compute disks delete mlflow-vm-5d1c2e7 {zone} {quiet}",
        "compute address": f"gcloud compute addresses delete mlflow-ip-91f0aa {region} {quiet}",
        "sql instance": f"gcloud sql instances delete mlflow-db-0b9e4f1 {quiet}",
        "storage bucket": "gcloud storage rm --recursive gs://mlflow-artifacts-3c4d5e",
    }


def test_resources_without_labels_are_found_by_the_marker_in_their_description():
    http = RecordedSession("gcp_search_stack_unlabelled.json")
    found = gcp.find(http, PROJECT, teardown.stack_filter(STACK))
    # Removal order: the network last, after its firewall rule, address and subnet; the
    # address is both labelled and marked, and listed once.
    assert [(item.kind, item.name) for item in found] == [
        ("iam service-account", "104276339150387716512"),
        ("compute firewall", "mlflow-firewall-https-5e2a9c1"),
        ("compute global-address", "mlflow-network-psa-range-2f6b8d1"),
        ("compute subnetwork", "mlflow-network-subnet-4d7e0b9"),
        ("compute network", "mlflow-network-vpc-8c1f3a2"),
    ]
    # Stack "<STACK>-b" has the same words in its marker, but not the exact marker.
    assert not [item for item in found if item.name.endswith("77aa01")]
    queries = [r[2] for r in http.requests if r[0] == "GET"]
    assert [q["query"] for q in queries] == [LABEL_QUERY, DESCRIPTION_QUERY, DESCRIPTION_QUERY]
    assert queries[-1]["pageToken"]  # the description search follows pages too


def test_each_marked_leftover_has_the_gcloud_command_that_removes_it():
    http = RecordedSession("gcp_search_stack_unlabelled.json")
    commands = {
        item.name: item.remove_command
        for item in gcp.find(http, PROJECT, teardown.stack_filter(STACK))
    }
    quiet = f"--project {PROJECT} --quiet"
    account = "mlflow-test-alice-2025013108@mlflow-ci-1234.iam.gserviceaccount.com"
    assert commands == {
        "mlflow-firewall-https-5e2a9c1": (
            f"gcloud compute firewall-rules delete mlflow-firewall-https-5e2a9c1 {quiet}"
        ),
        "mlflow-network-psa-range-2f6b8d1": (
            f"gcloud compute addresses delete mlflow-network-psa-range-2f6b8d1 --global {quiet}"
        ),
        "104276339150387716512": f"gcloud iam service-accounts delete {account} {quiet}",
        "mlflow-network-subnet-4d7e0b9": (
            "gcloud compute networks subnets delete mlflow-network-subnet-4d7e0b9 "
            f"--region europe-west1 {quiet}"
        ),
        # The Cloud SQL peering holds the network until it is removed.
        "mlflow-network-vpc-8c1f3a2": (
            "gcloud services vpc-peerings delete --network mlflow-network-vpc-8c1f3a2"
            f" --service servicenetworking.googleapis.com {quiet}"
            f" && gcloud compute networks delete mlflow-network-vpc-8c1f3a2 {quiet}"
        ),
    }


def test_descriptions_are_searched_only_for_one_stack():
    """Environment and expiry cannot be checked on a resource without labels."""
    assert gcp.marked_stack(teardown.stack_filter(STACK)) == STACK
    assert gcp.marked_stack({"mlflow-kit-env": "test", "mlflow-kit-expires": None}) is None
    assert gcp.marked_stack({"mlflow-kit-stack": STACK, "mlflow-kit-env": "test"}) is None


@pytest.fixture
def recorded_gcp(monkeypatch):
    """Make the tasks' GCP session replay a cassette."""
    sessions = {}

    def use(cassette):
        sessions["http"] = RecordedSession(cassette)
        monkeypatch.setattr(gcp, "session", lambda *a, **k: sessions["http"])
        return sessions["http"]

    return use


def test_fab_teardown_gcp_lists_leftovers_and_exits_nonzero(pulumi_standin, recorded_gcp, capsys):
    pulumi_standin.add_stack(STACK, gcp_config())
    recorded_gcp("gcp_search_stack_leftovers.json")
    with pytest.raises(Exit) as raised:
        stack_tasks.teardown(Context(), stack=STACK)
    assert raised.value.code == 1
    out = capsys.readouterr().out
    assert "NOT CLEAN: 5 resource(s)" in out
    for name in (
        "mlflow-vm-5d1c2e7",
        "mlflow-db-0b9e4f1",
        "mlflow-artifacts-3c4d5e",
        "mlflow-ip-91f0aa",
    ):
        assert name in out
    assert "gcloud sql instances delete mlflow-db-0b9e4f1" in out
    assert "mlflow-artifacts-77aa01" not in out


def test_fab_teardown_gcp_reports_leaked_resources_without_labels(
    pulumi_standin, recorded_gcp, capsys
):
    pulumi_standin.add_stack(STACK, gcp_config())
    recorded_gcp("gcp_search_stack_unlabelled.json")
    with pytest.raises(Exit) as raised:
        stack_tasks.teardown(Context(), stack=STACK)
    assert raised.value.code == 1
    out = capsys.readouterr().out
    assert "NOT CLEAN: 5 resource(s)" in out
    assert "gcp compute firewall mlflow-firewall-https-5e2a9c1 in global" in out
    assert "gcloud compute firewall-rules delete mlflow-firewall-https-5e2a9c1" in out
    assert "gcp compute network mlflow-network-vpc-8c1f3a2 in global" in out
    assert "gcloud compute networks delete mlflow-network-vpc-8c1f3a2" in out
    assert "77aa01" not in out  # the near-miss stack's firewall rule and network


def test_fab_teardown_gcp_clean(pulumi_standin, recorded_gcp, capsys):
    pulumi_standin.add_stack(STACK, gcp_config())
    http = recorded_gcp("gcp_search_stack_clean.json")
    stack_tasks.teardown(Context(), stack=STACK)
    assert f"clean: no resource of stack {STACK} remains" in capsys.readouterr().out
    assert http.requests[0][1].endswith(f"/projects/{PROJECT}:searchAllResources")


def test_listing_lag_is_waited_out_before_calling_anything_a_leftover():
    """Asset search lists a deleted resource for a while: poll until it is gone or time is up."""
    http = RecordedSession("gcp_search_stack_leftovers.json")
    clean = RecordedSession("gcp_search_stack_clean.json")
    answers = iter([http, http, clean])

    class Lagging(teardown.Finder):
        cloud = "gcp"

        def find(self, wanted):
            return gcp.find(next(answers), PROJECT, wanted)

    waits = []
    timing = teardown.Timing(settle=60, poll=20, sleep=waits.append)
    left = teardown.verify(Lagging(), teardown.stack_filter(STACK), timing, say=lambda _: None)
    assert left == [] and waits == [20, 20]


def test_orphan_removal_calls_each_service_delete():
    http = RecordedSession("gcp_search_stack_leftovers.json")
    http.interactions.append(
        {
            "url": f"{gcp.STORAGE_API}/b/mlflow-artifacts-3c4d5e/o",
            "params": {"versions": "true"},
            "status": 200,
            "body": {"items": [{"name": "runs/1/model.pkl", "generation": "17"}]},
        }
    )
    for item in gcp.find(http, PROJECT, teardown.stack_filter(STACK)):
        gcp.remove(http, item)
    assert http.deleted == [
        f"{gcp.COMPUTE_API}/projects/{PROJECT}/zones/europe-west1-b/instances/mlflow-vm-5d1c2e7",
        f"{gcp.SQL_API}/projects/{PROJECT}/instances/mlflow-db-0b9e4f1",
        f"{gcp.STORAGE_API}/b/mlflow-artifacts-3c4d5e/o/runs%2F1%2Fmodel.pkl",
        f"{gcp.STORAGE_API}/b/mlflow-artifacts-3c4d5e",
        f"{gcp.COMPUTE_API}/projects/{PROJECT}/regions/europe-west1/addresses/mlflow-ip-91f0aa",
        f"{gcp.COMPUTE_API}/projects/{PROJECT}/zones/europe-west1-b/disks/mlflow-vm-5d1c2e7",
    ]
