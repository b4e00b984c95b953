"""The stack output contract: the only names provisioning reads from a stack.

Both clouds export exactly these names; provisioning and the tests import them
from here. This module must not import pulumi, so that provisioning can use it
on machines that only run Fabric.
"""

CLOUD = "cloud"
HOST = "host"
SSH_USER = "ssh_user"
TRACKING_URL = "tracking_url"
BACKEND_STORE_URI = "backend_store_uri"
ARTIFACTS_DESTINATION = "artifacts_destination"
ADMIN_PASSWORD = "admin_password"  # noqa: S105 - an output name, not a password
DB_CONNECTION_NAME = "db_connection_name"
ENVIRONMENT = "environment"
#: The VM as its cloud's tunnel names it: GCP instance name, AWS instance ID.
VM_ID = "vm_id"
#: GCP zone / AWS availability zone of the VM.
VM_ZONE = "vm_zone"
REGION = "region"
GCP_PROJECT = "gcp_project"
#: How SSH reaches the VM: one of SSH_ACCESS_MODES.
SSH_ACCESS = "ssh_access"
#: Port 22 open to sshAllowedCidrs; or no direct path, only GCP IAP / AWS Session Manager.
SSH_ACCESS_MODES = ("cidrs", "iap", "session-manager")
#: What the stack's settings say about the server; ``fab bootstrap --stack`` applies them.
MLFLOW_VERSION = "mlflow_version"
TLS_MODE = "tls_mode"
#: The stack's domain and Let's Encrypt contact; empty strings when not set.
DOMAIN = "domain"
ACME_EMAIL = "acme_email"
#: The database's connection limit as its cloud derives it from the tier or instance
#: class (stacks/connection_limits.py), an integer; 0 when the kit does not know the
#: class. Bootstrap sizes the servers' connection pools within it.
DB_MAX_CONNECTIONS = "db_max_connections"
#: The VM's SSH host key, an OpenSSH public key line (``ssh-ed25519 AAAA...``): the stack
#: generates the key pair and installs it at first boot, so bootstrap can pin it.
SSH_HOST_KEY = "ssh_host_key"
#: The database as its cloud's API names it, for backups and restores: the RDS DB
#: instance identifier, or the Cloud SQL instance name (with ``gcp_project``).
DB_INSTANCE_ID = "db_instance_id"
#: GCP only: the CA certificates (PEM) that sign the Cloud SQL server certificate, which
#: names the instance's private IP (Google-managed shared CA), for ``sslmode=verify-full``.
DB_CA_PEM = "db_ca_pem"
#: AWS only: where the VM fetches the CA bundle of RDS in the stack's region (https).
DB_CA_URL = "db_ca_url"

#: ``topology: group`` only (a single-server stack exports none of these, so its outputs
#: are what they always were; provisioning reads a missing ``topology`` as ``single``).
#: In group mode the outputs above keep their names and say what they mean for a group:
#: ``host`` and ``tracking_url`` are the load balancer's (``domain``, else its address),
#: ``vm_id`` names the group (the GCP regional managed instance group, the AWS Auto
#: Scaling group), ``vm_zone`` is the group's region (it spans zones), ``ssh_access`` is
#: ``iap`` or ``session-manager`` (the instances have no public address), and
#: ``ssh_host_key`` is the one host key every instance of the group serves.
#:
#: ``topology``: ``single`` or ``group`` (TOPOLOGIES).
TOPOLOGY = "topology"
TOPOLOGIES = ("single", "group")
#: How bootstrap finds the servers: a list with one entry per group, each a map of
#: ``group`` (the GCP managed instance group's self link, or the AWS Auto Scaling
#: group's name), ``region``, ``size`` (the instances the group keeps running) and
#: ``instances``. The cloud picks the instances after the deploy and replaces them when
#: they fail, so the stack cannot know them: ``instances`` is an empty list, and
#: ``fab --stack`` lists them from the cloud (``gcloud compute instance-groups managed
#: list-instances GROUP --region REGION``, ``aws autoscaling describe-auto-scaling-groups
#: --auto-scaling-group-names GROUP``) and reaches each by name or instance ID through
#: IAP or Session Manager (provisioning.group_instances), unless a ``--settings`` file
#: gives ``hosts``.
HOSTS = "hosts"
#: The load balancer's public address: GCP its global IPv4 address, AWS its DNS name.
LB_ADDRESS = "lb_address"
#: What users open: ``https://<domain or lb_address>``, the same as ``tracking_url``.
URL = "url"
#: Secrets every instance of a group must share (a session signed by one instance is
#: read by the next; gateway secrets encrypted by one are decrypted by another): the
#: stack generates them, and ``fab bootstrap --stack`` gives them to every instance as
#: its ``flask_secret_key`` and ``kek_passphrase`` settings. A single
#: server generates and keeps its own on the VM.
FLASK_SECRET_KEY = "flask_secret_key"  # noqa: S105 - an output name, not a secret
KEK_PASSPHRASE = "kek_passphrase"  # noqa: S105 - an output name, not a passphrase

#: Outputs every stack exports, whatever the cloud.
COMMON_OUTPUTS = (
    CLOUD,
    HOST,
    SSH_USER,
    TRACKING_URL,
    BACKEND_STORE_URI,
    ARTIFACTS_DESTINATION,
    ADMIN_PASSWORD,
    ENVIRONMENT,
)
#: How to reach the VM and what the server should be, and the database as its cloud
#: names it; stacks deployed before these existed lack them, so provisioning treats
#: them as optional.
ACCESS_OUTPUTS = (VM_ID, VM_ZONE, REGION, SSH_ACCESS, SSH_HOST_KEY)
SERVER_OUTPUTS = (MLFLOW_VERSION, TLS_MODE, DOMAIN, ACME_EMAIL, DB_MAX_CONNECTIONS)
DATABASE_OUTPUTS = (DB_INSTANCE_ID,)
#: Outputs only some clouds export.
CLOUD_OUTPUTS = {"gcp": (DB_CONNECTION_NAME, GCP_PROJECT, DB_CA_PEM), "aws": (DB_CA_URL,)}
#: Outputs that must be Pulumi secrets in the stack state.
SECRET_OUTPUTS = frozenset({BACKEND_STORE_URI, ADMIN_PASSWORD})
#: Outputs only ``topology: group`` exports, after all the others.
GROUP_OUTPUTS = (TOPOLOGY, HOSTS, LB_ADDRESS, URL, FLASK_SECRET_KEY, KEK_PASSPHRASE)
#: Of those, the ones that must be secrets too.
GROUP_SECRET_OUTPUTS = frozenset({FLASK_SECRET_KEY, KEK_PASSPHRASE})

CLOUDS = ("gcp", "aws")
#: Where artifacts go in the bucket: ``artifacts_destination`` is ``<scheme>://<bucket>/`` this.
ARTIFACTS_PREFIX = "mlflow-artifacts"
#: The MLflow version the kit installs and tests, unless a setting pins another.
DEFAULT_MLFLOW_VERSION = "3.17.2"
ENVIRONMENTS = ("dev", "test", "prod")

# Every resource a stack creates carries these labels (GCP) or tags (AWS), so
# that teardown can prove nothing of a stack is left and the reaper can find
# expired test stacks. GCP label keys and values allow only lowercase letters,
# digits, "-" and "_", so the same spelling is used on both clouds.
#: The kit's own label names start with this; a stack's own labels may not
#: (stacks/rules.py).
LABEL_PREFIX = "mlflow-kit-"
LABEL_STACK = LABEL_PREFIX + "stack"
LABEL_ENVIRONMENT = LABEL_PREFIX + "env"
#: UTC expiry of a test stack as ``YYYYMMDDhhmm`` (digits only, label-safe).
LABEL_EXPIRES = LABEL_PREFIX + "expires"
EXPIRES_FORMAT = "%Y%m%d%H%M"
#: Appended to the description of resources that take a description but no labels
#: (GCP networks, firewall rules, service accounts), so the leftover check finds them
#: too; ``{stack}`` is the stack's label value. The brackets keep stack ``a`` from
#: matching stack ``a-b``.
DESCRIPTION_MARKER = "[" + LABEL_STACK + "={stack}]"


def expected_outputs(cloud: str, topology: str = "single") -> tuple[str, ...]:
    """Every output name a stack for ``cloud`` with ``topology`` exports."""
    names = (
        COMMON_OUTPUTS + ACCESS_OUTPUTS + SERVER_OUTPUTS + DATABASE_OUTPUTS + CLOUD_OUTPUTS[cloud]
    )
    return names + GROUP_OUTPUTS if topology == "group" else names


def secret_outputs(topology: str = "single") -> frozenset[str]:
    """The outputs a stack with ``topology`` must keep secret."""
    return SECRET_OUTPUTS | GROUP_SECRET_OUTPUTS if topology == "group" else SECRET_OUTPUTS
