"""nginx on a group's servers keeps the load balancer's idle connections longer than the
balancer does (stacks/ingress.py), and a single server's site is unchanged.

What a user notices otherwise: now and then a 502 from the load balancer, when it sends
a request on an idle connection nginx has just closed.
"""

from __future__ import annotations

import re

from provisioning.render import context, render
from provisioning.settings import Deployment
from provisioning.settings.group import group_host
from stacks import ingress
from tests.unit.conftest import valid_settings
from tests.unit.test_templates import needs_nginx, nginx_test

HOSTS = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
SHARED = {"flask_secret_key": "f" * 32, "kek_passphrase": "k" * 40}


def site_of(deployment: Deployment, **tls) -> tuple[str, dict]:
    ctx = context(
        deployment,
        server_ports=[5001, 5002],
        flask_secret_key="k" * 64,
        job_execution=False,
        kek_passphrase="p" * 40,
    )
    # nginx -t loads the certificates: real ones made for the test.
    ctx.update(tls)
    return render("nginx-mlflow.conf.j2", ctx), ctx


def one_of_a_group() -> Deployment:
    whole = Deployment(
        **valid_settings(host=HOSTS[0], hosts=HOSTS, public_host="mlflow.example.com", **SHARED)
    )
    return group_host(whole, HOSTS[1])


def seconds(site: str, directive: str) -> list[int]:
    return [int(s) for s in re.findall(rf"^\s*{directive} (\d+)s;$", site, re.M)]


def test_a_groups_nginx_outlasts_both_balancers_idle_connections():
    site, _ = site_of(one_of_a_group())
    (keepalive,) = seconds(site, "keepalive_timeout")
    assert keepalive == ingress.BACKEND_KEEPALIVE_SECONDS
    assert keepalive > ingress.GCP_BACKEND_KEEPALIVE_SECONDS  # Google: fixed at 600 s
    assert keepalive > ingress.ALB_IDLE_TIMEOUT_SECONDS  # the stack's ALB idle timeout
    # Inside the server block, where the balancer's connections arrive.
    assert site.index("keepalive_timeout") > site.index("listen 443 ssl")


def test_the_balancers_allow_the_silence_nginx_allows():
    site, _ = site_of(one_of_a_group())
    assert seconds(site, "proxy_read_timeout") == [ingress.TRANSFER_SECONDS]
    assert seconds(site, "proxy_send_timeout") == [ingress.TRANSFER_SECONDS]
    assert ingress.ALB_IDLE_TIMEOUT_SECONDS >= ingress.TRANSFER_SECONDS
    assert ingress.GCP_RESPONSE_TIMEOUT_SECONDS >= ingress.TRANSFER_SECONDS


def test_a_single_server_keeps_nginx_defaults():
    # Clients reach a single server directly: nginx's own keepalive_timeout (75 s).
    site, _ = site_of(Deployment(**valid_settings()))
    assert "keepalive_timeout" not in site


@needs_nginx
def test_nginx_accepts_a_groups_site(tmp_path, pem_dir):
    site, ctx = site_of(
        one_of_a_group(),
        tls_cert=str(pem_dir / "server.crt"),
        tls_key=str(pem_dir / "server.key"),
    )
    assert str(pem_dir / "server.crt") in site
    result = nginx_test(tmp_path, site, ctx)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr, result.stderr
