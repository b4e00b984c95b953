"""``topology: group``, both clouds: one test per property, resource by resource, under mocks.

Servers without a public address behind the cloud's own HTTPS load balancer; the
database reachable from the group only; the load balancer's health check, TLS policy
and draining; every resource labelled for teardown's leftover check; the outputs; and
``topology: single`` written out declaring exactly what a stack without it declares.
"""

from __future__ import annotations

import base64
import inspect
import json

import pytest
import stack_harness
import yaml
from deprecations import resource_class
from stack_harness import (
    ALB_DNS,
    HTTPS_CIDR,
    LB_IP,
    RecordingMocks,
    certificate_pair,
    config,
    group_config,
    revealed,
)

from stacks import contract, ingress
from stacks.gcp.marker import marker

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]

# GCP
FIREWALL = "gcp:compute/firewall:Firewall"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
MIG = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
HEALTH = "gcp:compute/healthCheck:HealthCheck"
BACKEND = "gcp:compute/backendService:BackendService"
PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
SSL_POLICY = "gcp:compute/sSLPolicy:SSLPolicy"
ARMOR = "gcp:compute/securityPolicy:SecurityPolicy"
FORWARDING = "gcp:compute/globalForwardingRule:GlobalForwardingRule"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
#: Google's load balancer and health check ranges, and IAP's TCP forwarding range.
GOOGLE_LB = ["130.211.0.0/22", "35.191.0.0/16"]
IAP = ["35.235.240.0/20"]
# AWS
GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LAUNCH = "aws:ec2/launchTemplate:LaunchTemplate"
ASG = "aws:autoscaling/group:Group"
TARGETS = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
ALB = "aws:lb/loadBalancer:LoadBalancer"
RDS = "aws:rds/instance:Instance"
WORLD = {"0.0.0.0/0", "::/0"}
TEAM = {"labels": {"team": "ml"}}


@pytest.fixture(scope="module")
def gcp():
    return stack_harness.run(group_config("gcp", "dev", **TEAM), stack="gcp-group")


@pytest.fixture(scope="module")
def aws():
    return stack_harness.run(group_config("aws", "dev", **TEAM), stack="aws-group")


def ports_of(rule) -> set[int]:
    return {int(port) for allow in rule.inputs["allows"] for port in allow["ports"]}


def expected_labels(stack: str, environment: str = "dev") -> dict[str, str]:
    return {
        "team": "ml",
        contract.LABEL_STACK: stack,
        contract.LABEL_ENVIRONMENT: environment,
    }


# --- the instances are unreachable from the internet --------------------------------------


def test_gcp_instances_have_no_external_address(gcp):
    (template,) = gcp.of_type(TEMPLATE)
    (nic,) = template.inputs["networkInterfaces"]
    assert nic["subnetwork"] == "mlflow-network-subnet-id"
    assert not nic.get("accessConfigs") and not nic.get("ipv6AccessConfigs")
    # No VM, no static address: the load balancer's global address is the only public one.
    assert not gcp.of_type("gcp:compute/instance:Instance")
    assert not gcp.of_type("gcp:compute/address:Address")


def test_gcp_instances_admit_https_from_the_load_balancer_and_ssh_from_iap_only(gcp):
    rules = {rule.name: rule for rule in gcp.of_type(FIREWALL)}
    assert {name: ports_of(rule) for name, rule in rules.items()} == {
        "mlflow-firewall-https": {443},
        "mlflow-firewall-ssh": {22},
    }
    assert rules["mlflow-firewall-https"].inputs["sourceRanges"] == GOOGLE_LB
    assert rules["mlflow-firewall-ssh"].inputs["sourceRanges"] == IAP
    for rule in rules.values():
        assert not WORLD & set(rule.inputs["sourceRanges"]), rule.name


def test_gcp_allowed_cidrs_apply_at_the_load_balancer(gcp):
    armor = gcp.one(ARMOR).inputs
    by_priority = {rule["priority"]: rule for rule in armor["rules"]}
    allow = by_priority[1000]
    assert allow["action"] == "allow"
    assert allow["match"]["config"]["srcIpRanges"] == [HTTPS_CIDR]
    default = by_priority[2147483647]
    assert default["action"].startswith("deny")
    assert default["match"]["config"]["srcIpRanges"] == ["*"]
    assert set(by_priority) == {1000, 2147483647}
    policy = gcp.one(BACKEND).inputs["securityPolicy"]
    assert policy.endswith("/global/securityPolicies/mlflow-lb-armor-a1b2c3d")


def test_gcp_instances_get_out_through_cloud_nat_only(gcp):
    nat = gcp.one("gcp:compute/routerNat:RouterNat").inputs
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    assert nat["subnetworks"] == [
        {"name": "mlflow-network-subnet-id", "sourceIpRangesToNats": ["ALL_IP_RANGES"]}
    ]
    router = gcp.one("gcp:compute/router:Router").inputs
    assert router["network"] == "mlflow-network-vpc-id"


def test_aws_instances_have_no_public_address_and_sit_in_private_subnets(aws):
    template = aws.one(LAUNCH).inputs
    (nic,) = template["networkInterfaces"]
    assert nic["associatePublicIpAddress"] == "false"
    assert nic["securityGroups"] == ["security-vm-id"]
    assert "vpcSecurityGroupIds" not in template
    assert not aws.of_type("aws:ec2/instance:Instance")
    asg = aws.one(ASG).inputs
    assert asg["vpcZoneIdentifiers"] == ["network-servers-0-id", "network-servers-1-id"]
    subnets = {s.name: s.inputs for s in aws.of_type("aws:ec2/subnet:Subnet")}
    zones = {subnets[f"network-servers-{i}"]["availabilityZone"] for i in range(2)}
    assert len(zones) == 2
    assert all(subnets[f"network-servers-{i}"]["mapPublicIpOnLaunch"] is False for i in range(2))
    # Their route table leads out through the NAT gateway, never the internet gateway.
    tables = {
        a.inputs["subnetId"]: a.inputs["routeTableId"]
        for a in aws.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    }
    routes = aws.of_type("aws:ec2/route:Route")
    for index in range(2):
        table = tables[f"network-servers-{index}-id"]
        (route,) = [r.inputs for r in routes if r.inputs["routeTableId"] == table]
        assert route == {
            "routeTableId": table,
            "destinationCidrBlock": "0.0.0.0/0",
            "natGatewayId": "network-nat-id",
        }
    nat = aws.one("aws:ec2/natGateway:NatGateway").inputs
    assert nat["subnetId"] == "network-public-0-id"
    # The only Elastic IP is the NAT gateway's.
    assert [e.name for e in aws.of_type("aws:ec2/eip:Eip")] == ["network-nat-ip"]


def test_aws_instances_admit_https_from_the_load_balancer_only_and_no_ssh(aws):
    vm = [r.inputs for r in aws.of_type(INGRESS) if r.inputs["securityGroupId"] == "security-vm-id"]
    assert len(vm) == 1
    (rule,) = vm
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (443, 443, "tcp")
    assert rule["referencedSecurityGroupId"] == "security-lb-id"
    assert not any(k in rule for k in ("cidrIpv4", "cidrIpv6", "prefixListId"))
    for rule in aws.of_type(INGRESS):
        assert rule.inputs["fromPort"] != 22, rule.name
    lb = [r.inputs for r in aws.of_type(INGRESS) if r.inputs["securityGroupId"] == "security-lb-id"]
    assert [(r["fromPort"], r["cidrIpv4"]) for r in lb] == [(443, HTTPS_CIDR)]
    # Session Manager instead of SSH.
    attachment = aws.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment["policyArn"].endswith(":policy/AmazonSSMManagedInstanceCore")
    assert aws.outputs[contract.SSH_ACCESS] == "session-manager"


def test_aws_instances_require_imdsv2_and_encrypt_their_volume(aws):
    template = aws.one(LAUNCH).inputs
    assert template["metadataOptions"]["httpTokens"] == "required"
    assert template["metadataOptions"]["httpPutResponseHopLimit"] == 1
    (disk,) = template["blockDeviceMappings"]
    assert disk["ebs"]["encrypted"] == "true"
    assert template["iamInstanceProfile"] == {"name": "identity-profile-abc1234"}
    assert template["imageId"] == stack_harness.AMI_ID
    user_data = base64.b64decode(revealed(template["userData"])).decode()
    document = yaml.safe_load(user_data.removeprefix("#cloud-config\n"))
    assert any("amazon-ssm-agent" in command for command in document["runcmd"])


# --- the database is reachable from the group only ----------------------------------------


def test_gcp_database_is_private_regional_and_no_rule_admits_postgres(gcp):
    settings = gcp.one(SQL).inputs["settings"]
    ip = settings["ipConfiguration"]
    assert ip["ipv4Enabled"] is False
    assert not ip.get("authorizedNetworks")
    assert ip["privateNetwork"] == "mlflow-network-vpc-id"
    assert settings["availabilityType"] == "REGIONAL"
    # A dedicated core by default: the Cloud SQL SLA does not cover shared-core instances.
    assert settings["tier"] == "db-custom-1-3840"
    for rule in gcp.of_type(FIREWALL):
        assert 5432 not in ports_of(rule), rule.name


def test_aws_database_admits_the_servers_group_only_and_is_multi_az(aws):
    rules = [
        r.inputs for r in aws.of_type(INGRESS) if r.inputs["securityGroupId"] == "security-db-id"
    ]
    assert rules == [
        {
            "securityGroupId": "security-db-id",
            "ipProtocol": "tcp",
            "fromPort": 5432,
            "toPort": 5432,
            "description": "Postgres from the MLflow VM",
            "referencedSecurityGroupId": "security-vm-id",
            "tags": rules[0]["tags"],
        }
    ]
    db = aws.one(RDS).inputs
    assert db["multiAz"] is True
    assert db["publiclyAccessible"] is False
    assert db["vpcSecurityGroupIds"] == ["security-db-id"]
    # The load balancer's group never reaches the database.
    lb_out = [
        r.inputs for r in aws.of_type(EGRESS) if r.inputs["securityGroupId"] == "security-lb-id"
    ]
    assert [(r["fromPort"], r["referencedSecurityGroupId"]) for r in lb_out] == [
        (443, "security-vm-id")
    ]


# --- health check, TLS, draining --------------------------------------------------------


def test_gcp_health_check_asks_health_over_https_on_the_named_port(gcp):
    check = gcp.one(HEALTH).inputs["httpsHealthCheck"]
    assert (check["requestPath"], check["port"]) == ("/health", 443)
    mig = gcp.one(MIG).inputs
    assert mig["namedPorts"] == [{"name": "https", "port": 443}]
    backend = gcp.one(BACKEND).inputs
    assert backend["protocol"] == "HTTPS" and backend["portName"] == "https"
    assert backend["healthChecks"].endswith("/global/healthChecks/mlflow-group-health-a1b2c3d")
    (target,) = backend["backends"]
    assert target["group"].endswith("/instanceGroups/mlflow-group-manager-a1b2c3d")


def test_aws_health_check_asks_health_over_https(aws):
    targets = aws.one(TARGETS).inputs
    assert (targets["protocol"], targets["port"]) == ("HTTPS", 443)
    check = targets["healthCheck"]
    assert (check["path"], check["protocol"], check["matcher"]) == ("/health", "HTTPS", "200")
    assert aws.one(ASG).inputs["targetGroupArns"] == [
        f"arn:aws:elasticloadbalancing:{stack_harness.AWS_REGION}:123456789012:targetgroup/lb-targets"
    ]


def test_gcp_load_balancer_speaks_tls_1_2_and_newer_only_on_443(gcp):
    policy = gcp.one(SSL_POLICY).inputs
    assert policy["minTlsVersion"] == "TLS_1_2"
    assert policy["profile"] in ("MODERN", "RESTRICTED")
    proxy = gcp.one(PROXY).inputs
    assert proxy["sslPolicy"].endswith("/global/sslPolicies/mlflow-lb-tls-a1b2c3d")
    (certificate,) = proxy["sslCertificates"]
    managed = gcp.one("gcp:compute/managedSslCertificate:ManagedSslCertificate")
    assert certificate.endswith(f"/{managed.name}-a1b2c3d")
    assert managed.inputs["managed"] == {"domains": ["mlflow.example.com"]}
    (rule,) = gcp.of_type(FORWARDING)
    assert rule.inputs["portRange"] == "443"
    assert rule.inputs["ipAddress"] == LB_IP
    assert rule.inputs["loadBalancingScheme"] == "EXTERNAL_MANAGED"


def test_aws_listener_uses_the_tls13_policy_only_on_443(aws):
    (listener,) = aws.of_type(LISTENER)
    inputs = listener.inputs
    assert (inputs["port"], inputs["protocol"]) == (443, "HTTPS")
    assert inputs["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    validation = aws.one("aws:acm/certificateValidation:CertificateValidation").inputs
    assert inputs["certificateArn"] == validation["certificateArn"]
    certificate = aws.one("aws:acm/certificate:Certificate").inputs
    assert (certificate["domainName"], certificate["validationMethod"]) == (
        "mlflow.example.com",
        "DNS",
    )
    alb = aws.one(ALB).inputs
    assert alb["internal"] is False and alb["dropInvalidHeaderFields"] is True
    assert alb["subnets"] == ["network-public-0-id", "network-public-1-id"]
    assert alb["securityGroups"] == ["security-lb-id"]


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_a_provided_certificate_replaces_the_managed_one(cloud):
    pem, key = certificate_pair()
    run = stack_harness.run(
        group_config(cloud, groupCertificatePem=pem, groupCertificateKeyPem=key, domain=None)
    )
    if cloud == "gcp":
        assert not run.of_type("gcp:compute/managedSslCertificate:ManagedSslCertificate")
        certificate = run.one("gcp:compute/sSLCertificate:SSLCertificate").inputs
        assert revealed(certificate["certificate"]) == pem
        assert stack_harness.is_secret(certificate["privateKey"])
        assert revealed(certificate["privateKey"]) == key
        assert run.outputs[contract.HOST] == LB_IP
    else:
        assert not run.of_type("aws:acm/certificateValidation:CertificateValidation")
        certificate = run.one("aws:acm/certificate:Certificate").inputs
        assert certificate["certificateBody"] == pem
        assert "certificateChain" not in certificate
        assert stack_harness.is_secret(certificate["privateKey"])
        assert run.outputs[contract.HOST] == ALB_DNS
    assert run.outputs[contract.URL] == f"https://{run.outputs[contract.HOST]}"


def test_gcp_backend_service_drains_connections(gcp):
    assert gcp.one(BACKEND).inputs["connectionDrainingTimeoutSec"] == 30


def test_aws_target_group_drains_before_deregistering(aws):
    assert int(aws.one(TARGETS).inputs["deregistrationDelay"]) == 30


# --- timeouts: the balancers against nginx (stacks/ingress.py) ------------------------------


def test_gcp_balancer_lets_a_transfer_run_as_long_as_nginx_does(gcp):
    # The backend service timeout is the whole response's: an hour, nginx's
    # proxy_read_timeout; at the former 300 s a 5 GB download needed 17 MB/s.
    assert gcp.one(BACKEND).inputs["timeoutSec"] == 3600 == ingress.TRANSFER_SECONDS
    # Client side: Google's documented default (610 s), on record.
    assert gcp.one(PROXY).inputs["httpKeepAliveTimeoutSec"] == 610


def test_aws_balancer_idles_as_long_as_nginx_allows_silence(aws):
    # Not the 60 s default: a response silent for a minute would be cut with a 504.
    assert aws.one(ALB).inputs["idleTimeout"] == 3600 == ingress.TRANSFER_SECONDS


def test_nginx_keeps_idle_connections_longer_than_either_balancer():
    # Else a balancer reuses a connection nginx is closing, and the user gets a 502.
    assert ingress.BACKEND_KEEPALIVE_SECONDS > ingress.GCP_BACKEND_KEEPALIVE_SECONDS == 600
    assert ingress.BACKEND_KEEPALIVE_SECONDS > ingress.ALB_IDLE_TIMEOUT_SECONDS


# --- labels for teardown --------------------------------------------------------------------


def _parameters(typ: str) -> set[str]:
    cls = resource_class(typ)
    return set(inspect.signature(cls._internal_init).parameters) if cls else set()


#: Resources that are part of another and go with it (teardown finds the other).
GCP_PARTS = {
    "gcp:compute/routerNat:RouterNat",  # of its router
    "gcp:sql/database:Database",  # of the Cloud SQL instance
    "gcp:sql/user:User",
    "gcp:storage/bucketIAMMember:BucketIAMMember",  # grants of the service account
    "gcp:projects/iAMMember:IAMMember",
    "gcp:serviceaccount/iAMMember:IAMMember",
    "gcp:servicenetworking/connection:Connection",  # the peering of the network
}


def test_gcp_every_resource_is_labelled_or_marked_for_teardown(gcp):
    labels = expected_labels("gcp-group")
    for resource in gcp.customs():
        if not resource.typ.startswith("gcp:") or resource.typ in GCP_PARTS:
            continue
        parameters = _parameters(resource.typ)
        if resource.typ == SQL:
            assert resource.inputs["settings"]["userLabels"] == labels
        elif "labels" in parameters:
            assert resource.inputs["labels"] == labels, resource.name
        else:
            assert "description" in parameters, resource.typ
            assert marker("gcp-group") in resource.inputs["description"], resource.name
    # The loop saw every type of the group that bills or blocks a new stack of the name,
    # each of which teardown's leftover check finds by its labels or its marker.
    assert {TEMPLATE, MIG, HEALTH, BACKEND, PROXY, SSL_POLICY, ARMOR, FORWARDING,
            "gcp:compute/globalAddress:GlobalAddress", "gcp:compute/uRLMap:URLMap",
            "gcp:compute/router:Router"} <= {r.typ for r in gcp.customs()}  # fmt: skip
    template = gcp.one(TEMPLATE).inputs
    assert template["disks"][0]["labels"] == labels
    assert gcp.provider_input("gcp", "defaultLabels") == labels


def test_aws_every_resource_and_every_launched_instance_is_tagged(aws):
    labels = expected_labels("aws-group")
    assert aws.provider_tags() == labels
    for resource in aws.customs():
        tags = resource.inputs.get("tags")
        if isinstance(tags, dict):
            assert {k: tags[k] for k in labels} == labels, resource.name
            assert tags["Name"].startswith("aws-group-"), resource.name
    # Resources without tags of their own carry the provider's default tags (above).
    assert {ALB, TARGETS, LISTENER, LAUNCH, ASG, "aws:acm/certificate:Certificate",
            "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip"} <= {
        r.typ for r in aws.customs()}  # fmt: skip
    # Auto Scaling takes no default tags: the group's own, given on to its instances.
    asg_tags = {t["key"]: t for t in aws.one(ASG).inputs["tags"]}
    for key, value in labels.items():
        assert asg_tags[key] == {"key": key, "value": value, "propagateAtLaunch": True}
    launched = {
        spec["resourceType"]: spec["tags"] for spec in aws.one(LAUNCH).inputs["tagSpecifications"]
    }
    assert set(launched) == {"instance", "volume", "network-interface"}
    for tags in launched.values():
        assert {k: tags[k] for k in labels} == labels


# --- outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_group_outputs_are_the_contract_and_the_shared_secrets_are_secret(cloud, gcp, aws):
    run = {"gcp": gcp, "aws": aws}[cloud]
    assert tuple(run.outputs) == contract.expected_outputs(cloud, "group")
    secret = {name for name, is_secret in run.secret.items() if is_secret}
    assert secret == contract.secret_outputs("group")
    outputs = run.outputs
    assert outputs[contract.TOPOLOGY] == "group"
    assert outputs[contract.LB_ADDRESS] == {"gcp": LB_IP, "aws": ALB_DNS}[cloud]
    assert outputs[contract.HOST] == "mlflow.example.com"
    assert outputs[contract.URL] == outputs[contract.TRACKING_URL] == "https://mlflow.example.com"
    assert outputs[contract.SSH_ACCESS] == {"gcp": "iap", "aws": "session-manager"}[cloud]
    (entry,) = outputs[contract.HOSTS]
    region = {"gcp": stack_harness.GCP_REGION, "aws": stack_harness.AWS_REGION}[cloud]
    group = {
        "gcp": f"{stack_harness.COMPUTE_API}/projects/{stack_harness.GCP_PROJECT}/regions/"
        f"{region}/instanceGroupManagers/mlflow-group-manager-a1b2c3d",
        "aws": "group-asg-abc1234",
    }[cloud]
    assert entry == {"group": group, "region": region, "size": 2, "instances": []}
    assert outputs[contract.VM_ID] == group.rsplit("/", 1)[-1]
    assert outputs[contract.VM_ZONE] == region
    # Every instance gets the same secrets: one generated value each, long enough.
    assert len(outputs[contract.FLASK_SECRET_KEY]) >= 32
    assert len(outputs[contract.KEK_PASSPHRASE]) >= 32
    assert outputs[contract.SSH_HOST_KEY].startswith("ssh-ed25519 ")


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_group_size_is_the_groups_size(cloud):
    run = stack_harness.run(group_config(cloud, groupSize="5"))
    if cloud == "gcp":
        assert run.one(MIG).inputs["targetSize"] == 5
    else:
        asg = run.one(ASG).inputs
        assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == (5, 5, 5)
    assert run.outputs[contract.HOSTS][0]["size"] == 5


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_the_shared_secrets_come_from_the_stack_only(cloud):
    """The Flask key and the KEK passphrase are generated once per stack and exported as
    secrets for bootstrap to give every instance; no template carries them."""
    prefix = {"gcp": "mlflow-group", "aws": "group"}[cloud]
    generated = {f"{prefix}-flask-key": "F" * 64, f"{prefix}-kek": "K" * 64}
    run = stack_harness.run(group_config(cloud), mocks=RecordingMocks(passwords=generated))
    for name in generated:
        assert run.named(name).inputs["length"] >= 32
    assert run.outputs[contract.FLASK_SECRET_KEY] == "F" * 64
    assert run.outputs[contract.KEK_PASSPHRASE] == "K" * 64
    template = json.dumps(revealed(run.one(TEMPLATE if cloud == "gcp" else LAUNCH).inputs))
    if cloud == "aws":
        user_data = json.loads(template)["userData"]
        template += base64.b64decode(user_data).decode()
    assert "F" * 64 not in template and "K" * 64 not in template


# --- single stays single ------------------------------------------------------------------


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_topology_single_written_out_declares_exactly_what_the_default_does(cloud):
    default = stack_harness.run(config(cloud))
    single = stack_harness.run(config(cloud, topology="single"))

    # Registrations arrive in no fixed order: compare them by URN.
    def by_urn(run):
        return sorted(run.monitor.registrations, key=lambda r: r.urn)

    assert by_urn(single) == by_urn(default)
    assert {r.name: r.inputs for r in single.resources} == {
        r.name: r.inputs for r in default.resources
    }
    assert single.outputs == default.outputs
    assert tuple(single.outputs) == contract.expected_outputs(cloud)
    group_types = {TEMPLATE, MIG, BACKEND, ASG, LAUNCH, ALB}
    assert not group_types & {r.typ for r in single.resources}
