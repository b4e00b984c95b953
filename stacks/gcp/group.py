"""A group of servers: identical Shielded Debian 12 instances made from one template, kept
running by a regional managed instance group, with no public address of their own."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.marker import described
from stacks.gcp.server import IMAGE, instance_metadata
from stacks.gcp.settings import GcpSettings
from stacks.host_key import host_key
from stacks.ingress import HEALTH_CHECK_PATH, HTTPS
from stacks.passwords import GCP_PASSWORD, admin_password, random_password, shared_secret

#: The named port the load balancer's backend service sends requests to.
PORT_NAME = "https"


@dataclass(frozen=True, kw_only=True)
class ServerGroupArgs:
    settings: GcpSettings
    subnet: pulumi.Input[str]
    #: The instances' service account (its email), the same one a single VM runs as.
    service_account: pulumi.Input[str]


class ServerGroup(Component):
    """The instance template (what a single VM is, less its address), the regional group
    that keeps ``groupSize`` instances of it across the region's zones, the health check
    the load balancer asks, and the secrets every instance shares."""

    TYPE = "mlflow-server:gcp:ServerGroup"

    def declare(self, name: str, args: ServerGroupArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        group = s.common.group
        stack = s.common.stack
        # One host key for every instance: bootstrap pins the same key on each.
        self.host_key = host_key(f"{name}-host-key", self.child)

        self.template = gcp.compute.InstanceTemplate(
            f"{name}-template",
            machine_type=s.machine_type,
            disks=[
                gcp.compute.InstanceTemplateDiskArgs(
                    boot=True,
                    auto_delete=True,
                    source_image=IMAGE,
                    disk_size_gb=s.boot_disk_gb,
                    disk_type="pd-balanced",
                    labels=s.labels,
                )
            ],
            # No access config: no external address. Egress goes through Cloud NAT,
            # HTTPS comes from the load balancer, SSH through IAP.
            network_interfaces=[
                gcp.compute.InstanceTemplateNetworkInterfaceArgs(subnetwork=args.subnet)
            ],
            service_account=gcp.compute.InstanceTemplateServiceAccountArgs(
                email=args.service_account, scopes=["cloud-platform"]
            ),
            shielded_instance_config=gcp.compute.InstanceTemplateShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            metadata=instance_metadata(s, self.host_key.private_openssh),
            labels=s.labels,
            description=described("MLflow tracking server instances", stack),
            opts=self.child,
        )
        self.health_check = gcp.compute.HealthCheck(
            f"{name}-health",
            https_health_check=gcp.compute.HealthCheckHttpsHealthCheckArgs(
                port=HTTPS, request_path=HEALTH_CHECK_PATH
            ),
            check_interval_sec=10,
            timeout_sec=5,
            healthy_threshold=2,
            unhealthy_threshold=3,
            description=described("MLflow /health through nginx", stack),
            opts=self.child,
        )
        self.manager = gcp.compute.RegionInstanceGroupManager(
            f"{name}-manager",
            region=s.region,
            base_instance_name=s.base_instance_name,
            versions=[
                gcp.compute.RegionInstanceGroupManagerVersionArgs(
                    name="primary", instance_template=self.template.self_link_unique
                )
            ],
            target_size=group.size,
            named_ports=[
                gcp.compute.RegionInstanceGroupManagerNamedPortArgs(name=PORT_NAME, port=HTTPS)
            ],
            # A new template reaches an instance only when the group recreates it: the
            # instances are configured by `fab bootstrap` after they start, so a proactive
            # rollout would swap every configured server for a bare one. For the same
            # reason there is no auto-healing policy: it would recreate an instance that
            # is not yet bootstrapped (and so unhealthy), again and again. The load
            # balancer sends requests only to healthy instances either way.
            update_policy=gcp.compute.RegionInstanceGroupManagerUpdatePolicyArgs(
                type="OPPORTUNISTIC", minimal_action="REPLACE"
            ),
            description=described("MLflow tracking servers", stack),
            wait_for_instances=False,
            opts=self.child,
        )

        password = random_password(f"{name}-admin-password", GCP_PASSWORD, self.child)
        self.admin_password = admin_password(s.common.admin_password, password.result)
        self.flask_secret_key = shared_secret(f"{name}-flask-key", self.child)
        self.kek_passphrase = shared_secret(f"{name}-kek", self.child)
        self.ssh_host_key = self.host_key.public_openssh
        #: The group as IAP and bootstrap find it: its name and region.
        self.vm_id = self.manager.name
        self.vm_zone = pulumi.Output.from_input(s.region)
        self.instance_group = self.manager.instance_group
        self.hosts = self.manager.self_link.apply(
            lambda link: [{"group": link, "region": s.region, "size": group.size, "instances": []}]
        )
        return {
            "group": self.vm_id,
            "instance_group": self.instance_group,
            "health_check": self.health_check.self_link,
            "admin_password": self.admin_password,
            "ssh_host_key": self.ssh_host_key,
        }
