"""What ``topology: group`` adds on GCP is found after a teardown, with the gcloud command
that removes each, in an order that works: against recorded Cloud Asset responses.

Cloud Asset's searchAllResources covers every type the group adds (its supported asset
types: InstanceGroupManager, InstanceTemplate, GlobalForwardingRule, GlobalAddress,
BackendService, HealthCheck, UrlMap, TargetHttpsProxy, SslCertificate, SslPolicy,
SecurityPolicy, Router; "Supported asset types", cloud.google.com/asset-inventory/docs/
supported-asset-types); the resources without labels are found by their description.
"""

from __future__ import annotations

import pytest

from provisioning.teststacks import gcp, teardown
from teststacks.recorded_gcp import RecordedSession

pytestmark = pytest.mark.unit
STACK = "test-alice-202501310800"
PROJECT = "mlflow-ci-1234"
Q = f"--project {PROJECT} --quiet"


def found():
    return gcp.find(
        RecordedSession("gcp_search_group_leftovers.json"), PROJECT, teardown.stack_filter(STACK)
    )


def test_every_group_resource_is_found_once_with_its_gcloud_command():
    commands = {item.kind: item.remove_command for item in found()}
    assert commands == {
        "compute global-forwarding-rule":
            f"gcloud compute forwarding-rules delete mlflow-lb-https-4c2d1e0 --global {Q}",
        "compute target-https-proxy":
            f"gcloud compute target-https-proxies delete mlflow-lb-proxy-8a9b0c1 --global {Q}",
        "compute url-map": f"gcloud compute url-maps delete mlflow-lb-urls-4d5e6f7 --global {Q}",
        "compute backend-service":
            f"gcloud compute backend-services delete mlflow-lb-backend-0a1b2c3 --global {Q}",
        "compute instance-group-manager": "gcloud compute instance-groups managed delete"
            f" mlflow-servers-mig-2a3b4c5 --region europe-west1 {Q}",
        "compute instance":
            f"gcloud compute instances delete mlflow-servers-x1yz --zone europe-west1-b {Q}",
        "compute instance-template":
            f"gcloud compute instance-templates delete mlflow-servers-template-5b6c7d8 {Q}",
        "compute health-check":
            f"gcloud compute health-checks delete mlflow-servers-health-6d7e8f9 --global {Q}",
        "compute ssl-certificate":
            f"gcloud compute ssl-certificates delete mlflow-lb-certificate-2d3e4f5 --global {Q}",
        "compute ssl-policy": f"gcloud compute ssl-policies delete mlflow-lb-tls-6a7b8c9 --global {Q}",
        "compute security-policy":
            f"gcloud compute security-policies delete mlflow-lb-armor-1f2e3d4 --global {Q}",
        "compute global-address": f"gcloud compute addresses delete mlflow-lb-ip-9a8b7c6 --global {Q}",
        "compute router":
            f"gcloud compute routers delete mlflow-network-router-0e1f2a3 --region europe-west1 {Q}",
    }  # fmt: skip
    assert len(found()) == len(commands)  # the labelled and marked forwarding rule once


def test_the_load_balancer_goes_from_its_front_inwards_and_the_group_before_its_vms():
    order = [item.kind for item in found()]
    assert order[:6] == [
        "compute global-forwarding-rule",  # holds the proxy and the address
        "compute target-https-proxy",  # holds the URL map, certificate and SSL policy
        "compute url-map",  # holds the backend service
        "compute backend-service",  # holds the group, health check and Armor policy
        "compute instance-group-manager",  # recreates any VM removed before it
        "compute instance",
    ]
    for held in ("compute instance-template", "compute health-check", "compute global-address"):
        assert order.index(held) > order.index("compute instance-group-manager")


def test_orphans_are_removed_over_rest_in_that_order():
    http = RecordedSession("gcp_search_group_leftovers.json")
    for item in gcp.find(http, PROJECT, teardown.stack_filter(STACK)):
        gcp.remove(http, item)
    assert http.deleted[:2] == [
        f"{gcp.COMPUTE_API}/projects/{PROJECT}/global/forwardingRules/mlflow-lb-https-4c2d1e0",
        f"{gcp.COMPUTE_API}/projects/{PROJECT}/global/targetHttpsProxies/mlflow-lb-proxy-8a9b0c1",
    ]
    assert (
        f"{gcp.COMPUTE_API}/projects/{PROJECT}/regions/europe-west1/instanceGroupManagers/"
        "mlflow-servers-mig-2a3b4c5"
    ) in http.deleted


def test_the_stand_in_refuses_a_parameter_the_api_does_not_have():
    # "assetType" (singular) is no parameter of searchAllResources; "assetTypes" is.
    http = RecordedSession("gcp_search_group_leftovers.json")
    url = f"{gcp.ASSET_API}/projects/{PROJECT}:searchAllResources"
    assert http.get(url, params={"query": "q", "assetType": "x"}).status_code == 400
    assert http.get(url, params={"query": "q", "pageSize": 501}).status_code == 400
