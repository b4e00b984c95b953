"""Security properties of the GCP program, resource by resource, under mocks."""

from __future__ import annotations

import inspect
import json

import pytest
import stack_harness
from deprecations import resource_class
from stack_harness import DB_PRIVATE_IP, SSH_KEY, STATIC_IP, revealed

from stacks import contract
from stacks.gcp.settings import IAP_TCP_FORWARDING_CIDR

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("error::DeprecationWarning")]

FIREWALL = "gcp:compute/firewall:Firewall"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
ACCOUNT = "gcp:serviceaccount/account:Account"
ACCOUNT_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
INSTANCE = "gcp:compute/instance:Instance"
WORLD = {"0.0.0.0/0", "::/0"}


def stack_config(environment: str = "dev", **overrides):
    return stack_harness.config("gcp", environment, **overrides)


def run_program(values, stack: str | None = None):
    return stack_harness.run(values, stack=stack)


@pytest.fixture(scope="module")
def dev():
    return run_program(stack_config("dev"), "gcp-dev")


def sa_email(run) -> str:
    account = run.one(ACCOUNT)
    return f"{account.inputs['accountId']}@my-project-123.iam.gserviceaccount.com"


def ports_of(rule) -> set[int]:
    """Every TCP/UDP port a rule admits; a rule without ports admits all of them."""
    ports: set[int] = set()
    for allow in rule.inputs["allows"]:
        if allow["protocol"] not in ("tcp", "udp"):
            raise AssertionError(f"{rule.name} admits protocol {allow['protocol']}")
        if not allow.get("ports"):
            return set(range(1, 65536))
        for port in allow["ports"]:
            low, _, high = port.partition("-")
            ports.update(range(int(low), int(high or low) + 1))
    return ports


# --- firewall ---------------------------------------------------------------------------


def test_no_rule_admits_the_world_unless_configured(dev):
    rules = dev.of_type(FIREWALL)
    assert rules
    for rule in rules:
        assert not WORLD & set(rule.inputs["sourceRanges"]), rule.name


def test_only_https_and_ssh_are_admitted(dev):
    admitted = {rule.name: ports_of(rule) for rule in dev.of_type(FIREWALL)}
    assert admitted == {"mlflow-firewall-https": {443}, "mlflow-firewall-ssh": {22}}
    for rule in dev.of_type(FIREWALL):
        assert rule.inputs["direction"] == "INGRESS"
        assert not rule.inputs.get("denies")


def test_https_comes_from_the_allowed_cidrs_only(dev):
    (rule,) = [r for r in dev.of_type(FIREWALL) if 443 in ports_of(r)]
    assert rule.inputs["sourceRanges"] == ["203.0.113.0/24"]


def test_ssh_comes_from_iap_by_default(dev):
    (rule,) = [r for r in dev.of_type(FIREWALL) if 22 in ports_of(r)]
    assert rule.inputs["sourceRanges"] == [IAP_TCP_FORWARDING_CIDR]


def test_ssh_comes_from_listed_cidrs_instead_of_iap():
    run = run_program(stack_config("dev", sshAllowedCidrs=["198.51.100.0/28"]))
    (rule,) = [r for r in run.of_type(FIREWALL) if 22 in ports_of(r)]
    assert rule.inputs["sourceRanges"] == ["198.51.100.0/28"]


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_postgres_is_never_exposed(environment):
    run = run_program(
        stack_config(
            environment,
            tlsMode="letsencrypt",
            domain="mlflow.example.com",
            acmeEmail="ops@example.com",
            sshAllowedCidrs=["198.51.100.0/28"],
        )
    )
    for rule in run.of_type(FIREWALL):
        assert 5432 not in ports_of(rule), rule.name


def test_port_80_opens_only_for_letsencrypt(dev):
    assert all(80 not in ports_of(rule) for rule in dev.of_type(FIREWALL))
    run = run_program(
        stack_config(
            "dev", tlsMode="letsencrypt", domain="mlflow.example.com", acmeEmail="ops@example.com"
        )
    )
    (http,) = [r for r in run.of_type(FIREWALL) if 80 in ports_of(r)]
    assert ports_of(http) == {80}
    # Let's Encrypt validates from unpublished addresses: port 80 must be open to all.
    assert http.inputs["sourceRanges"] == ["0.0.0.0/0"]


def test_world_open_https_only_when_written_out():
    run = run_program(stack_config("dev", httpsAllowedCidrs=["0.0.0.0/0"]))
    open_rules = [r.name for r in run.of_type(FIREWALL) if WORLD & set(r.inputs["sourceRanges"])]
    assert open_rules == ["mlflow-firewall-https"]


def test_rules_target_the_server_service_account_only(dev):
    for rule in dev.of_type(FIREWALL):
        assert rule.inputs["targetServiceAccounts"] == [sa_email(dev)], rule.name
        assert not rule.inputs.get("targetTags")


def test_rules_live_in_the_custom_network(dev):
    vpc = dev.one("gcp:compute/network:Network")
    assert vpc.inputs["autoCreateSubnetworks"] is False
    for rule in dev.of_type(FIREWALL):
        assert rule.inputs["network"] == "mlflow-network-vpc-id"


# --- database ---------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_database_has_no_public_ip_and_requires_ssl(environment):
    run = run_program(stack_config(environment))
    ip = run.one(SQL_INSTANCE).inputs["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False
    assert not ip.get("authorizedNetworks")
    assert ip["privateNetwork"] == "mlflow-network-vpc-id"
    assert ip["sslMode"] == "ENCRYPTED_ONLY"


def test_database_reaches_the_vpc_through_private_services_access(dev):
    address = dev.one("gcp:compute/globalAddress:GlobalAddress")
    assert address.inputs["purpose"] == "VPC_PEERING"
    assert address.inputs["addressType"] == "INTERNAL"
    connection = dev.one("gcp:servicenetworking/connection:Connection")
    assert connection.inputs["service"] == "servicenetworking.googleapis.com"
    assert connection.inputs["reservedPeeringRanges"] == ["mlflow-network-psa-range-a1b2c3d"]


def test_database_user_gets_the_generated_password(dev):
    user = dev.one("gcp:sql/user:User")
    assert user.inputs["name"] == "mlflow"
    passwords = dev.of_type("random:index/randomPassword:RandomPassword")
    assert {p.name for p in passwords} == {"mlflow-db-password", "mlflow-vm-admin-password"}
    assert all(p.inputs["length"] >= 24 for p in passwords)
    assert dev.outputs[contract.BACKEND_STORE_URI].split("@")[-1].startswith(DB_PRIVATE_IP)


# --- bucket and identity ---------------------------------------------------------------


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_bucket_enforces_public_access_prevention_and_uniform_access(environment):
    bucket = run_program(stack_config(environment)).one(BUCKET)
    assert bucket.inputs["publicAccessPrevention"] == "enforced"
    assert bucket.inputs["uniformBucketLevelAccess"] is True


def test_storage_grant_is_scoped_to_this_bucket(dev):
    grant = dev.one(BUCKET_MEMBER)
    assert grant.inputs["bucket"] == "mlflow-artifacts-bucket-a1b2c3d"
    assert grant.inputs["role"] in ("roles/storage.objectUser", "roles/storage.objectAdmin")
    assert grant.inputs["member"] == f"serviceAccount:{sa_email(dev)}"


def test_project_roles_are_the_minimum_and_none_is_storage(dev):
    roles = {m.inputs["role"] for m in dev.of_type(PROJECT_MEMBER)}
    assert roles == {
        "roles/cloudsql.client",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
    }
    assert all(
        m.inputs["member"] == f"serviceAccount:{sa_email(dev)}" for m in dev.of_type(PROJECT_MEMBER)
    )
    assert all(m.inputs["project"] == "my-project-123" for m in dev.of_type(PROJECT_MEMBER))


def test_no_keys_no_other_grants(dev):
    types = {r.typ for r in dev.resources}
    assert "gcp:serviceaccount/key:Key" not in types
    iam_types = {t for t in types if "iam" in t.lower()}
    assert iam_types == {BUCKET_MEMBER, PROJECT_MEMBER, ACCOUNT_MEMBER}


def test_the_server_may_sign_urls_as_itself_and_as_no_one_else(dev):
    # MLflow's server signs the part URLs of a client's multipart upload to GCS
    # (blob.generate_signed_url); with no key, that is IAM's signBlob on the VM's own
    # account, which roles/iam.serviceAccountTokenCreator carries.
    (grant,) = dev.of_type(ACCOUNT_MEMBER)
    email = dev.one(INSTANCE).inputs["serviceAccount"]["email"]
    assert grant.inputs == {
        "serviceAccountId": f"projects/my-project-123/serviceAccounts/{email}",
        "role": "roles/iam.serviceAccountTokenCreator",
        "member": f"serviceAccount:{email}",
    }


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_no_iam_role_is_granted_project_wide(environment):
    # On the project, the token creator role would let the VM act as every service
    # account in it (and the other iam.* roles are worse).
    run = run_program(stack_config(environment))
    project_roles = {m.inputs["role"] for m in run.of_type(PROJECT_MEMBER)}
    assert project_roles
    assert not {r for r in project_roles if r.startswith("roles/iam.")}
    for grant in run.of_type(ACCOUNT_MEMBER):
        assert grant.inputs["serviceAccountId"].endswith(f"/{sa_email(run)}"), grant.name


# --- vm ---------------------------------------------------------------------------------


def test_vm_runs_as_the_dedicated_service_account(dev):
    vm = dev.one(INSTANCE)
    assert vm.inputs["serviceAccount"] == {"email": sa_email(dev), "scopes": ["cloud-platform"]}


def test_vm_is_shielded_debian_12(dev):
    vm = dev.one(INSTANCE)
    assert vm.inputs["bootDisk"]["initializeParams"]["image"] == "debian-cloud/debian-12"
    assert vm.inputs["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    }


def test_vm_accepts_only_the_stack_ssh_keys(dev):
    metadata = revealed(dev.one(INSTANCE).inputs["metadata"])
    assert metadata["block-project-ssh-keys"] == "TRUE"
    assert metadata["ssh-keys"] == f"mlflow-admin:{SSH_KEY}"
    assert metadata["serial-port-enable"] == "FALSE"


def test_vm_sits_in_the_subnet_behind_the_static_address(dev):
    (nic,) = dev.one(INSTANCE).inputs["networkInterfaces"]
    assert nic["subnetwork"] == "mlflow-network-subnet-id"
    assert nic["accessConfigs"] == [{"natIp": STATIC_IP, "networkTier": "PREMIUM"}]
    assert dev.one("gcp:compute/address:Address").inputs["addressType"] == "EXTERNAL"


# --- everything -------------------------------------------------------------------------


def takes_labels(typ: str) -> bool:
    cls = resource_class(typ)
    return cls is not None and "labels" in inspect.signature(cls._internal_init).parameters


@pytest.mark.parametrize("environment", ["dev", "test", "prod"])
def test_every_resource_carries_the_stack_labels(environment):
    run = run_program(stack_config(environment, labels={"team": "ml"}))
    expected = {
        "team": "ml",
        contract.LABEL_STACK: f"gcp-{environment}",
        contract.LABEL_ENVIRONMENT: environment,
    }
    if environment == "test":
        expected[contract.LABEL_EXPIRES] = "203001011200"
    labelled = [r for r in run.resources if takes_labels(r.typ)]
    assert {r.typ for r in labelled} >= {BUCKET, INSTANCE, "gcp:compute/address:Address"}
    for resource in labelled:
        assert resource.inputs["labels"] == expected, resource.name
    assert run.one(SQL_INSTANCE).inputs["settings"]["userLabels"] == expected
    assert run.one(INSTANCE).inputs["bootDisk"]["initializeParams"]["labels"] == expected
    provider = run.one("pulumi:providers:gcp")
    assert provider.inputs["defaultLabels"] == json.dumps(expected)


def test_every_gcp_resource_uses_the_validated_provider(dev):
    provider = dev.one("pulumi:providers:gcp")
    assert (provider.inputs["project"], provider.inputs["region"], provider.inputs["zone"]) == (
        "my-project-123",
        "europe-west1",
        "europe-west1-b",
    )
    for resource in dev.resources:
        if resource.custom and resource.typ.startswith("gcp:"):
            assert "pulumi:providers:gcp::mlflow-gcp::" in resource.provider, resource.name
