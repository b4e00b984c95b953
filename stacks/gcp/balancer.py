"""The global external Application Load Balancer in front of a group: one address, HTTPS
only with a modern TLS policy, the allowed CIDRs enforced by Cloud Armor at Google's edge."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from stacks.component import Component
from stacks.gcp.marker import described
from stacks.gcp.settings import GcpSettings
from stacks.ingress import (
    DRAINING_SECONDS,
    GCP_CLIENT_KEEPALIVE_SECONDS,
    GCP_RESPONSE_TIMEOUT_SECONDS,
    HTTPS,
)

#: Cloud Armor takes at most ten source ranges per rule.
RANGES_PER_RULE = 10
#: The rule Cloud Armor applies when no other matches (its lowest priority).
DEFAULT_RULE_PRIORITY = 2147483647
#: TLS 1.2 and newer, with only the modern cipher suites (Google's RESTRICTED profile).
TLS_PROFILE = "RESTRICTED"
MIN_TLS_VERSION = "TLS_1_2"
#: How long one response may take end to end (stacks/ingress.py: a response timeout, and
#: artifacts of many GB pass through the servers).
REQUEST_TIMEOUT_SECONDS = GCP_RESPONSE_TIMEOUT_SECONDS


@dataclass(frozen=True, kw_only=True)
class LoadBalancerArgs:
    settings: GcpSettings
    #: The managed instance group's instance group (its URL).
    instance_group: pulumi.Input[str]
    health_check: pulumi.Input[str]


def armor_rules(cidrs: list[str]) -> list[gcp.compute.SecurityPolicyRuleArgs]:
    """Allow ``httpsAllowedCidrs``, ten ranges to a rule; refuse everyone else with 403."""

    def rule(action: str, priority: int, ranges: list[str], text: str):
        return gcp.compute.SecurityPolicyRuleArgs(
            action=action,
            priority=priority,
            match=gcp.compute.SecurityPolicyRuleMatchArgs(
                versioned_expr="SRC_IPS_V1",
                config=gcp.compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=ranges),
            ),
            description=text,
        )

    chunks = [cidrs[i : i + RANGES_PER_RULE] for i in range(0, len(cidrs), RANGES_PER_RULE)]
    allowed = [
        rule("allow", 1000 + index, chunk, "httpsAllowedCidrs")
        for index, chunk in enumerate(chunks)
    ]
    return allowed + [rule("deny(403)", DEFAULT_RULE_PRIORITY, ["*"], "everyone else")]


class LoadBalancer(Component):
    """Global address, certificate (Google-managed for the domain, or the stack's own),
    SSL policy, Cloud Armor policy, backend service, URL map, HTTPS proxy and the
    forwarding rule on 443. No port 80."""

    TYPE = "mlflow-server:gcp:LoadBalancer"

    def declare(self, name: str, args: LoadBalancerArgs) -> dict[str, pulumi.Input]:
        s = args.settings
        group = s.common.group
        stack = s.common.stack

        self.address = gcp.compute.GlobalAddress(
            f"{name}-ip",
            address_type="EXTERNAL",
            ip_version="IPV4",
            labels=s.labels,
            description=described("MLflow load balancer address", stack),
            opts=self.child,
        )
        if group.provided_certificate:
            certificate = gcp.compute.SSLCertificate(
                f"{name}-certificate",
                certificate=group.certificate_pem,
                private_key=group.certificate_key,
                description=described("MLflow load balancer certificate (provided)", stack),
                opts=self.child,
            )
        else:
            certificate = gcp.compute.ManagedSslCertificate(
                f"{name}-certificate",
                managed=gcp.compute.ManagedSslCertificateManagedArgs(domains=[s.common.domain]),
                description=described("MLflow load balancer certificate (Google-managed)", stack),
                opts=self.child,
            )
        self.ssl_policy = gcp.compute.SSLPolicy(
            f"{name}-tls",
            profile=TLS_PROFILE,
            min_tls_version=MIN_TLS_VERSION,
            description=described("MLflow load balancer: TLS 1.2 and newer", stack),
            opts=self.child,
        )
        # The firewall can only admit Google's load balancer ranges; who may reach the
        # servers is decided here, at the edge, before a request reaches a backend.
        self.armor = gcp.compute.SecurityPolicy(
            f"{name}-armor",
            type="CLOUD_ARMOR",
            rules=armor_rules(s.common.https_allowed_cidrs),
            labels=s.labels,
            description=described("MLflow: httpsAllowedCidrs only", stack),
            opts=self.child,
        )
        self.backend = gcp.compute.BackendService(
            f"{name}-backend",
            protocol="HTTPS",
            port_name="https",
            load_balancing_scheme="EXTERNAL_MANAGED",
            health_checks=args.health_check,
            backends=[
                gcp.compute.BackendServiceBackendArgs(
                    group=args.instance_group, balancing_mode="UTILIZATION", capacity_scaler=1.0
                )
            ],
            # An instance leaving the group finishes its requests first.
            connection_draining_timeout_sec=DRAINING_SECONDS,
            timeout_sec=REQUEST_TIMEOUT_SECONDS,
            security_policy=self.armor.self_link,
            log_config=gcp.compute.BackendServiceLogConfigArgs(enable=True, sample_rate=1.0),
            description=described("MLflow tracking servers", stack),
            opts=self.child,
        )
        urls = gcp.compute.URLMap(
            f"{name}-urls",
            default_service=self.backend.self_link,
            description=described("MLflow: every path to the servers", stack),
            opts=self.child,
        )
        proxy = gcp.compute.TargetHttpsProxy(
            f"{name}-proxy",
            url_map=urls.self_link,
            ssl_certificates=[certificate.self_link],
            ssl_policy=self.ssl_policy.self_link,
            http_keep_alive_timeout_sec=GCP_CLIENT_KEEPALIVE_SECONDS,
            description=described("MLflow HTTPS proxy", stack),
            opts=self.child,
        )
        gcp.compute.GlobalForwardingRule(
            f"{name}-https",
            target=proxy.self_link,
            ip_address=self.address.address,
            ip_protocol="TCP",
            port_range=str(HTTPS),
            load_balancing_scheme="EXTERNAL_MANAGED",
            labels=s.labels,
            description=described("MLflow HTTPS", stack),
            opts=self.child,
        )
        self.lb_address = self.address.address
        return {"lb_address": self.lb_address, "backend": self.backend.self_link}
