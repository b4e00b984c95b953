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

# How long a request and an idle connection may last, between the clouds' load balancers
# and nginx on each server of a group. nginx allows the servers an hour of silence on a
# request (proxy_read_timeout and proxy_send_timeout 3600s, templates/nginx-mlflow.conf.j2)
# because models and artifacts of many GB stream through it; the balancers allow the same.

#: nginx's proxy_read_timeout and proxy_send_timeout (the servers' longest silence).
TRANSFER_SECONDS = 3600
#: GCP's global external Application Load Balancer: its backend service timeout is a
#: response timeout, the time a backend has to return the *whole* response (default 30 s,
#: 1 to 2,147,483,647 s; Google advises against more than 86,400 s), not an idle timeout
#: ("External Application Load Balancer overview", Timeouts and retries, "Backend service
#: timeout", cloud.google.com/load-balancing/docs/https#timeout-bes). An hour downloads
#: 5 GB at about 1.4 MB/s; the kit's former 300 s cut such a download at 1.5 GB.
GCP_RESPONSE_TIMEOUT_SECONDS = TRANSFER_SECONDS
#: The same balancer keeps idle connections to the backends open for 600 s; this "backend
#: keepalive timeout" is fixed, and the backends' own keepalive must be longer, else a
#: connection the backend closes may be reused and the user gets a 502 (same page,
#: "Backend HTTP keepalive timeout"; "Request distribution for external Application Load
#: Balancers", cloud.google.com/load-balancing/docs/https/request-distribution).
GCP_BACKEND_KEEPALIVE_SECONDS = 600
#: Its client-side keepalive (the target HTTPS proxy's httpKeepAliveTimeoutSec): 610 s by
#: default, 5 to 1200 s (same page); set explicitly so the figure is on record.
GCP_CLIENT_KEEPALIVE_SECONDS = 610
#: AWS's Application Load Balancer: the connection idle timeout (default 60 s) applies to
#: client and target connections alike, while no data flows either way. AWS recommends
#: the target's idle timeout be larger, else the balancer may send a request on a
#: connection the target is closing and answer 502 ("Edit attributes for your Application
#: Load Balancer", Connection idle timeout, docs.aws.amazon.com/elasticloadbalancing/
#: latest/application/edit-load-balancer-attributes.html). The same hour of silence as
#: nginx allows, not the 60 s default that would cut a slow artifact write with a 504.
ALB_IDLE_TIMEOUT_SECONDS = TRANSFER_SECONDS
#: nginx's keepalive_timeout on a group's servers: longer than both balancers keep an
#: idle backend connection, so the balancer, never nginx, closes it first (Google's
#: table of web servers suggests 620 s for nginx behind its 600 s; AWS only "larger").
BACKEND_KEEPALIVE_SECONDS = max(GCP_BACKEND_KEEPALIVE_SECONDS, ALB_IDLE_TIMEOUT_SECONDS) + 20


def group_ingress(*, lb_sources: Sequence[str], ssh_cidrs: Sequence[str]) -> list[Ingress]:
    """A group's instances: HTTPS from the load balancer only (the allowed CIDRs apply
    there), SSH only from the cloud's tunnel; never port 80, never Postgres."""
    return [
        Ingress(purpose="https", port=HTTPS, sources=tuple(lb_sources)),
        Ingress(purpose="ssh", port=SSH, sources=tuple(ssh_cidrs)),
    ]
