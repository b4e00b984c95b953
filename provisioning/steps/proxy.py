"""TLS in front of the servers: the certificate and the nginx site."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import urlsplit

from provisioning import facts, files, handlers, jobs
from provisioning.layout import NGINX_UNIT_NAME, PATHS, TLS_CERTIFICATE
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment
from provisioning.steps.configuration import install_files
from provisioning.steps.packages import apt_install_script
from provisioning.transport import Host

NGINX_FILES = ("nginx-upstream.conf.j2", "nginx-mlflow.conf.j2")
LETSENCRYPT_FILES = ("certbot-deploy-hook.sh.j2",)
#: What the certificate step installs before the first certificate is issued.
ACME_FILES = ("nginx-acme.conf.j2", "certbot-env.conf.j2")
CERTBOT = "/usr/bin/certbot"


def certificate(host: Host, deployment: Deployment, ctx: dict) -> Outcome[frozenset[str]]:
    """A certificate for nginx: self-signed on the VM, provided files, or Let's Encrypt."""
    if deployment.tls_mode == "provided":
        return _provided(host, deployment)
    if deployment.tls_mode == "letsencrypt":
        return _letsencrypt(host, deployment, ctx)
    return _self_signed(host, deployment)


def _provided(host: Host, deployment: Deployment) -> Outcome[frozenset[str]]:
    cert = Path(deployment.tls_cert_file).read_bytes()
    key = Path(deployment.tls_key_file).read_bytes()
    any_changed = files.ensure_file(host, PATHS["tls_cert"], cert, mode="0644")
    any_changed |= files.ensure_file(host, PATHS["tls_key"], key, mode="0600")
    if any_changed:
        return changed("provided", frozenset({TLS_CERTIFICATE}))
    return unchanged("provided, as installed", frozenset())


def _self_signed(host: Host, deployment: Deployment) -> Outcome[frozenset[str]]:
    cert, key = PATHS["tls_cert"], PATHS["tls_key"]
    names = self_signed_names(deployment)
    current = host.read(facts.certificate_names(cert))
    if current and all(entry in current for entry in names_in_openssl_form(names)):
        return unchanged("self-signed, names match", frozenset())
    san = ",".join(names)
    host.run(
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj '/CN={deployment.public_host}' "
        f"-addext 'subjectAltName={san}' -keyout {key}.kit-new -out {cert}.kit-new 2>/dev/null"
        f" && chmod 600 {key}.kit-new && mv -f {key}.kit-new {key} && mv -f {cert}.kit-new {cert}"
    )
    return changed("self-signed, generated on the host", frozenset({TLS_CERTIFICATE}))


def self_signed_names(deployment: Deployment) -> list[str]:
    names = []
    for name in (deployment.public_host, deployment.host, "localhost", "127.0.0.1"):
        kind = "IP" if name.replace(".", "").isdigit() or ":" in name else "DNS"
        names.append(f"{kind}:{name}")
    return list(dict.fromkeys(names))


def names_in_openssl_form(names: list[str]) -> list[str]:
    return [n.replace("IP:", "IP Address:") for n in names]


def _letsencrypt(host: Host, deployment: Deployment, ctx: dict) -> Outcome[frozenset[str]]:
    """A certificate from the ACME server, issued through nginx answering the HTTP-01
    challenge on port 80; renewed by certbot's own timer, the deploy hook reloading nginx."""
    live = f"{PATHS['letsencrypt_live']}/{deployment.domain}/fullchain.pem"
    if host.read(facts.exists(live)):
        return unchanged(f"letsencrypt, certificate present; {_renewal_timer(host)}", frozenset())
    if not host.read(facts.executable(CERTBOT)):
        jobs.run_job(
            host, "apt", apt_install_script(["certbot"]), timeout=900,
            description="apt-get install certbot",
        )  # fmt: skip
    env = {}
    if deployment.acme_ca_cert_file:
        pem = Path(deployment.acme_ca_cert_file).read_bytes()
        files.ensure_file(host, PATHS["acme_ca"], pem, mode="0644")
        install_files(host, ctx, ACME_FILES[1:])
        host.run("systemctl daemon-reload")
        env["REQUESTS_CA_BUNDLE"] = PATHS["acme_ca"]
    # Nothing to serve TLS with yet: nginx answers the challenge on port 80 only.
    host.run(f"install -d -m 755 {PATHS['acme_webroot']}")
    install_files(host, ctx, ACME_FILES[:1])
    files.ensure_symlink(host, PATHS["nginx_site_enabled"], PATHS["nginx_site"])
    files.ensure_absent(host, PATHS["nginx_default_site"])
    host.run("nginx -t -q && systemctl enable nginx && systemctl reload-or-restart nginx")
    jobs.run_job(
        host,
        "certbot",
        f"certbot certonly --webroot -w {PATHS['acme_webroot']} "
        f"-d {shlex.quote(deployment.domain)} -m {shlex.quote(deployment.acme_email)} "
        f"--server {shlex.quote(deployment.acme_directory_url)} --agree-tos --non-interactive",
        timeout=600,
        description=f"certbot for {deployment.domain}",
        env=env,
    )
    issuer = urlsplit(deployment.acme_directory_url).hostname
    return changed(
        f"letsencrypt, issued by {issuer}; {_renewal_timer(host)}", frozenset({TLS_CERTIFICATE})
    )


def _renewal_timer(host: Host) -> str:
    """certbot.timer (Debian's certbot package) renews twice a day: enabled and running."""
    if host.read(facts.unit_enabled("certbot.timer")) != "enabled":
        host.run("systemctl enable --now certbot.timer")
        return "renewal timer enabled now"
    return "renewal timer enabled"


def site_files(deployment: Deployment) -> tuple[str, ...]:
    """The templates the proxy step installs for this deployment."""
    return NGINX_FILES + (LETSENCRYPT_FILES if deployment.tls_mode == "letsencrypt" else ())


def nginx(
    host: Host, ctx: dict, names: tuple[str, ...], changed_so_far: frozenset[str]
) -> Outcome[None]:
    """The site files ``names`` installed, nginx enabled, running, reloaded for what changed."""
    installed = install_files(host, ctx, names)
    needs_reload = handlers.actions_for(changed_so_far | installed).reloads(NGINX_UNIT_NAME)
    needs_reload |= files.ensure_symlink(host, PATHS["nginx_site_enabled"], PATHS["nginx_site"])
    needs_reload |= files.ensure_absent(host, PATHS["nginx_default_site"])
    host.run("nginx -t -q")
    enabled = host.read(facts.unit_enabled("nginx"))
    active = host.read(facts.unit_active("nginx"))
    if enabled != "enabled":
        host.run("systemctl enable nginx")
        needs_reload = True
    if active != "active":
        host.run("systemctl start nginx")
        return changed("started")
    if needs_reload:
        host.run("systemctl reload nginx")
        return changed("reloaded")
    if installed:
        return changed("installed " + ", ".join(sorted(installed)))
    return unchanged("site as rendered, running")
