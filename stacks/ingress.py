"""What reaches the VM from outside, and from where: the one plan both clouds' firewalls
(GCP firewall rules, AWS security group rules) are built from. Standard library only.

HTTPS from ``httpsAllowedCidrs``; HTTP only for Let's Encrypt, from anywhere (it
validates HTTP-01 from addresses it does not publish, and nginx answers there only the
challenge and a redirect to HTTPS, templates/nginx-mlflow.conf.j2); SSH from the stack's
SSH sources. Nothing else, never Postgres: the database is reached only from the VM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HTTPS, HTTP, SSH, POSTGRES = 443, 80, 22, 5432
ACME_HTTP_SOURCES = ("0.0.0.0/0",)


@dataclass(frozen=True, kw_only=True)
class Ingress:
    #: https, http or ssh: names the rule on both clouds.
    purpose: str
    port: int
    sources: tuple[str, ...]


def vm_ingress(
    *, https_cidrs: Sequence[str], ssh_cidrs: Sequence[str], tls_mode: str
) -> list[Ingress]:
    """The VM's ingress, in the order both clouds declare it; ``ssh_cidrs`` may be empty
    (AWS Session Manager: no SSH port at all)."""
    plan = [Ingress(purpose="https", port=HTTPS, sources=tuple(https_cidrs))]
    if tls_mode == "letsencrypt":
        plan.append(Ingress(purpose="http", port=HTTP, sources=ACME_HTTP_SOURCES))
    plan.append(Ingress(purpose="ssh", port=SSH, sources=tuple(ssh_cidrs)))
    return plan


#: What both clouds' load balancers ask each server of a group (nginx answers it from
#: MLflow's own /health).
HEALTH_CHECK_PATH = "/health"
#: Seconds a server leaving the load balancer gets to finish its requests.
DRAINING_SECONDS = 30


def group_ingress(*, lb_sources: Sequence[str], ssh_cidrs: Sequence[str]) -> list[Ingress]:
    """A group's instances: HTTPS from the load balancer only (the allowed CIDRs apply
    there), SSH only from the cloud's tunnel; never port 80, never Postgres."""
    return [
        Ingress(purpose="https", port=HTTPS, sources=tuple(lb_sources)),
        Ingress(purpose="ssh", port=SSH, sources=tuple(ssh_cidrs)),
    ]
