"""The local cloud: the services' link, the services, and fresh hosts on demand.

State (PIDs, ports, addresses, generated credentials) is kept in
``<run dir>/state.json`` (mode 0600) so ``python -m tests.localcloud down``
can stop everything by PID from another process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.localcloud import cloudlike, vendor
from tests.localcloud.acme import ChallTestSrv, Pebble
from tests.localcloud.cloudlike import CloudLike
from tests.localcloud.host import FreshHost
from tests.localcloud.image import CACHE_ROOT, ensure_image
from tests.localcloud.limits import Limits, for_machine_type
from tests.localcloud.link import SUBNET_PREFIX, Link, claim_slot
from tests.localcloud.oidc import OidcProvider
from tests.localcloud.pki import LocalCA
from tests.localcloud.services import (
    ARTIFACT_PREFIX,
    BUCKET,
    FileServer,
    GcsEmulator,
    Postgres,
    S3Server,
    VendorFiles,
)
from tests.standin.conda_installer import build_installer

RUNS_ROOT = Path(os.environ.get("MLFLOW_KIT_RUNS", "/var/tmp/mlflow-kit"))
#: Every local host lives in 10.213.0.0/16; PostgreSQL admits TLS clients from it only.
GUEST_CIDR = f"{SUBNET_PREFIX}.0.0/16"
#: ``new_host(limits=MACHINE_TYPE)``: none for a plain host, the stack's machine type's otherwise.
MACHINE_TYPE = "machine-type"
#: The ``acme_email`` of a Let's Encrypt deployment on the local cloud.
ACME_EMAIL = "ops@example.com"


@dataclass
class LocalCloud:
    run_dir: Path
    tied: bool
    services_slot: int = 0
    postgres: Postgres | None = None
    s3: S3Server | None = None
    gcs: GcsEmulator | None = None
    files: FileServer | None = None
    vendor: VendorFiles | None = None
    oidc: OidcProvider | None = None
    challtestsrv: ChallTestSrv | None = None
    pebble: Pebble | None = None
    hosts: list[FreshHost] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    image_rootfs: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def up(cls, *, tied: bool, log=print, run_dir: Path | None = None) -> LocalCloud:
        """Build (or reuse) the image, start the services; no host yet (see ``new_host``)."""
        started = time.monotonic()
        sweep_stale(log)
        image, build_seconds = ensure_image(log)
        slot = claim_slot()
        cloud = cls(
            run_dir=run_dir or RUNS_ROOT / f"cloud-{slot}",
            tied=tied,
            services_slot=slot,
            image_rootfs=image,
        )
        cloud.timings["image_build_s"] = build_seconds
        try:
            cloud.run_dir.mkdir(parents=True, exist_ok=True)
            cloud.run_dir.chmod(0o711)
            cloud.save()
            Link(slot).create()
            address = Link(slot).host_address
            t = time.monotonic()
            cloud.postgres = Postgres(address, GUEST_CIDR, cloud.run_dir, tied)
            cloud.postgres.start()
            cloud.s3 = S3Server(address, cloud.run_dir, tied)
            cloud.s3.start()
            cloud.gcs = GcsEmulator(address, cloud.run_dir, tied)
            cloud.gcs.start()
            cloud.files = FileServer(address, cloud.run_dir, tied)
            cloud.files.start()
            build_installer(cloud.files.directory)
            cloud.challtestsrv = ChallTestSrv(address, cloud.run_dir, tied)
            cloud.challtestsrv.start()
            cloud.pebble = Pebble(
                address, cloud.run_dir, tied, dns_server=cloud.challtestsrv.dns_server
            )
            cloud.pebble.start()
            cloud.timings["services_start_s"] = time.monotonic() - t
            cloud.save()
        except BaseException:
            cloud.down()
            raise
        cloud.timings["up_s"] = time.monotonic() - started
        log(f"local cloud up in {cloud.timings['up_s']:.1f}s (services on {address})")
        return cloud

    def new_host(
        self,
        log=print,
        *,
        like: CloudLike | None = None,
        limits: Limits | None | str = MACHINE_TYPE,
        wait: bool = True,
    ) -> FreshHost:
        """A pristine Debian 12 host, booted.

        ``like``: boot it as a fresh VM of that stack (``CloudLike``, see
        ``cloudlike.py``); None: the plain host, ready and idle at once.
        ``limits``: its memory and CPUs; by default none for a plain host and the
        stack's machine type's for a cloud-like one.
        ``wait``: return once SSH logs in and the boot has finished; False returns as
        soon as the host keys are known (a cloud-like host's sshd is not up yet).
        """
        assert self.image_rootfs is not None
        t = time.monotonic()
        slot = claim_slot()
        host = FreshHost(slot, self.run_dir / f"host-{slot}", self.tied)
        self.hosts.append(host)
        try:
            if like is None:
                host.limits = None if limits == MACHINE_TYPE else limits
                host.create(self.image_rootfs)
            else:
                self._create_cloud_like(host, like, limits)
            self.save()
            host.boot(wait=wait)
        finally:
            self.save()
        self.timings["host_ready_s"] = time.monotonic() - t
        log(
            f"{host.flavour} host {host.name} at {host.address}"
            f" {'answering SSH' if wait else 'booting'} after {self.timings['host_ready_s']:.1f}s"
        )
        return host

    def _create_cloud_like(self, host: FreshHost, like: CloudLike, limits) -> None:
        host.create(self.image_rootfs, plain=False)
        declared = like.declare(host.key_file.with_suffix(".pub").read_text().strip())
        host.flavour, host.user = declared.cloud, declared.ssh_user
        host.stack_host_key = " ".join((declared.ssh_host_key or "").split()[:2])
        host.limits = for_machine_type(declared.machine_type) if limits == MACHINE_TYPE else limits
        downloads = vendor.downloads(declared.user_data, declared.startup_script)
        etc_hosts = {}
        if downloads:
            etc_hosts = self._serve_downloads(downloads)
            vendor.trust_in_guest(host.rootfs, self.local_ca())
        host.instance_id = cloudlike.prepare(
            host.rootfs, declared, like, hostname=host.name, etc_hosts=etc_hosts
        )

    def local_ca(self) -> LocalCA:
        """The CA of the download servers' stand-ins (trusted by cloud-like guests that use them)."""
        return LocalCA(self.run_dir / "vendor" / "ca").ensure()

    def _serve_downloads(self, downloads: list[vendor.Download]) -> dict[str, str]:
        """Put each download's stand-in where the vendor server serves it; name -> address."""
        assert self.services_slot
        if self.vendor is None or not self.vendor.pid:
            self.vendor = VendorFiles(
                Link(self.services_slot).host_address, self.run_dir, self.tied
            )
            self.local_ca().issue(self.vendor.address, self.vendor.certs)
            self.vendor.start()
            self.save()
        deb = vendor.build_ssm_agent_deb(self.run_dir / "vendor" / "amazon-ssm-agent.deb")
        for download in downloads:
            self.local_ca().issue(download.host, self.vendor.certs)
            target = self.vendor.root / download.host / download.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copyfile(deb, target)
        return {download.host: self.vendor.address for download in downloads}

    def oidc_provider(self) -> OidcProvider:
        """The OpenID Connect provider (tests/localcloud/oidc.py), started on first use."""
        if self.oidc is None or not self.oidc.pid:
            self.oidc = OidcProvider(Link(self.services_slot).host_address, self.run_dir, self.tied)
            self.oidc.start(self.local_ca())
            self.save()
        return self.oidc

    def clone_host(
        self,
        source: FreshHost,
        log=print,
        *,
        limits: Limits | None | str = MACHINE_TYPE,
        wait: bool = True,
        restart_source: bool = True,
        prepare: Callable[[FreshHost], None] | None = None,
    ) -> FreshHost:
        """A copy of ``source`` in a new slot: its own address, name and machine ID,
        ``source``'s login key and host keys (known_hosts written for the new address);
        ``prepare(copy)`` runs on its root file system before it boots.

        A running ``source`` is powered off for the copy (a consistent file system)
        and, with ``restart_source``, booted again; one with a ``snapshot`` keeps
        running, and the copy is of the host as it was when the snapshot was taken.
        ``limits`` defaults to the source's. Things bootstrap derived from the source's
        address (certificate, server name) stay as they were until the next bootstrap.
        """
        t = time.monotonic()
        # A snapshot is copied as it is; otherwise the host's own layer, frozen while off.
        powered_off = source.running() and not source.snapshot
        if powered_off:
            source.shutdown()
        slot = claim_slot()
        host = FreshHost(slot, self.run_dir / f"host-{slot}", self.tied)
        host.limits = source.limits if limits == MACHINE_TYPE else limits
        host.stack_host_key = source.stack_host_key
        self.hosts.append(host)
        try:
            host.create_from(source)
            if prepare is not None:
                prepare(host)
            copied = time.monotonic() - t
            self.save()
            if powered_off and restart_source:
                source.boot(wait=False)
            host.boot(wait=wait)
            if powered_off and restart_source:
                source.wait_for_login()
        finally:
            self.save()
        self.timings["clone_copy_s"] = copied
        self.timings["clone_ready_s"] = time.monotonic() - t
        log(
            f"{host.name} at {host.address}: a copy of {source.name} (copied in {copied:.1f}s),"
            f" {'answering SSH' if wait else 'booting'} after {self.timings['clone_ready_s']:.1f}s"
        )
        return host

    def snapshot(self, host: FreshHost, log=print) -> None:
        """Take the snapshot ``host``'s copies are made from from now on (``clone_host``):
        one power cycle now (off, what it wrote frozen, booted again), none per copy; the
        copies do not see what the host writes after this. A snapshot replaces the last."""
        t = time.monotonic()
        was_running = host.running()
        if was_running:
            host.shutdown()
        try:
            host.freeze()
            host.snapshot = list(host.lowers)
            self.save()
        finally:
            if was_running:
                host.boot(wait=True)
        log(f"{host.name}: snapshot taken, running again after {time.monotonic() - t:.1f}s")

    def remove_host(self, host: FreshHost) -> None:
        host.destroy()
        if not os.path.ismount(host.rootfs):
            shutil.rmtree(host.run_dir, ignore_errors=True)
        if host in self.hosts:
            self.hosts.remove(host)
        self._remove_unused_layers()
        self.save()

    def _remove_unused_layers(self) -> None:
        """Frozen layers (``FreshHost.freeze``) no host stacks on any more."""
        used = {lower for host in self.hosts for lower in host.lowers}
        layers = self.run_dir / "layers"
        for layer in layers.iterdir() if layers.exists() else ():
            if str(layer) not in used:
                subprocess.run(["rm", "-rf", "--one-file-system", str(layer)], check=False)

    def down(self) -> None:
        """Stop every process by PID and remove hosts, links, NAT rules and files."""
        for host in list(self.hosts):
            host.destroy()
        self.hosts.clear()
        for service in self._services():
            if service is not None:
                service.stop()
        if self.services_slot:
            Link(self.services_slot).delete()
        if self.run_dir.exists():
            # A root file system still mounted is left alone (rm stays on this file system).
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.run_dir)], check=False)

    def _services(self) -> tuple:
        """Every service, in the order they stop."""
        return (
            self.oidc, self.pebble, self.challtestsrv, self.vendor, self.files, self.gcs,
            self.s3, self.postgres,
        )  # fmt: skip

    # -- Let's Encrypt's test server (acme.py) --------------------------------------------

    @property
    def acme_directory_url(self) -> str:
        """Pebble's ACME directory, ``https://<services address>:<port>/dir``."""
        assert self.pebble
        return self.pebble.directory_url

    @property
    def acme_ca_cert_file(self) -> Path:
        """The CA certificate that verifies Pebble's HTTPS listener (certbot's
        ``REQUESTS_CA_BUNDLE``); not the root of the certificates Pebble issues."""
        assert self.pebble
        return self.pebble.listener_ca.cert

    def acme_roots(self) -> str:
        """PEM of Pebble's issuing root(s), read from its management port: what verifies
        a certificate Pebble issued (with the intermediate in its full chain)."""
        assert self.pebble
        return self.pebble.roots()

    def point_domain(self, domain: str, host: FreshHost | str) -> None:
        """Make ``domain`` resolve, for Pebble, to ``host``'s address (an A record, nothing else).

        Only Pebble asks this DNS: neither the guests nor this machine resolve ``domain``.
        """
        assert self.challtestsrv
        self.challtestsrv.point(domain, host if isinstance(host, str) else host.address)

    # -- settings for the kit -------------------------------------------------------------

    def deployment_settings(
        self,
        host: FreshHost,
        backend: str,
        letsencrypt_domain: str | None = None,
        *,
        database: str | None = None,
    ) -> dict:
        """A ``fab bootstrap --settings`` document for ``host`` with ``backend`` s3 or gcs.

        ``database``: a database of the host's own, created now, instead of the one every
        host of this cloud shares (whose users, admin password and secrets a test on one
        host would then change for all).
        ``letsencrypt_domain``: TLS from Pebble for that (made-up) name, which is pointed
        at ``host`` (``point_domain``); certbot on the host then reaches Pebble at
        ``acme_directory_url`` and trusts its listener through ``acme_ca_cert_file``.
        """
        assert self.postgres and self.s3 and self.gcs and self.files
        installer, installer_sha256 = build_installer(self.files.directory)
        settings = {
            "cloud": "local",
            "environment": "test",
            "host": host.address,
            "ssh_user": host.user,
            "ssh_key_file": str(host.key_file),
            "known_hosts_file": str(host.known_hosts),
            "backend_store_uri": (
                self.postgres.create_database(database) if database else self.postgres.uri()
            ),
            # The database's certificate is checked (verify-full) against this CA.
            "db_ca_cert_file": str(self.postgres.ca.cert),
            "admin_password": self.admin_password(),
            "extra_ca_certs": extra_ca_certs(),
            # Conda channels cannot be reached here: a stand-in installer, named as such.
            "miniforge_url": self.files.url(installer.name),
            "miniforge_sha256": installer_sha256,
        }
        if host.stack_host_key:
            # As `fab bootstrap --stack` gives it (the ssh_host_key output): pinned, and waited
            # for while the first boot installs it; a GCP VM's startup script may do so only
            # after sshd has started with the image's keys.
            settings["ssh_host_key"] = host.stack_host_key
        if backend == "s3":
            settings["artifacts_destination"] = f"s3://{BUCKET}/{ARTIFACT_PREFIX}"
            settings["storage_env"] = {
                "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            settings["storage_secret_env"] = {
                "AWS_ACCESS_KEY_ID": self.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            }
        elif backend == "gcs":
            settings["artifacts_destination"] = f"gs://{BUCKET}/{ARTIFACT_PREFIX}"
            settings["storage_env"] = {
                "STORAGE_EMULATOR_HOST": self.gcs.endpoint,
                "GOOGLE_CLOUD_PROJECT": "local",
            }
        else:
            raise ValueError(f"backend {backend!r}: allowed s3, gcs")
        if letsencrypt_domain:
            self.point_domain(letsencrypt_domain, host)
            settings.update(
                {
                    "tls_mode": "letsencrypt",
                    "domain": letsencrypt_domain,
                    "acme_email": ACME_EMAIL,
                    "acme_directory_url": self.acme_directory_url,
                    "acme_ca_cert_file": str(self.acme_ca_cert_file),
                }
            )
        return settings

    def admin_password(self) -> str:
        path = self.run_dir / "admin_password"
        if not path.exists():
            import secrets

            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text()

    # -- state ----------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "run_dir": str(self.run_dir),
            "tied": self.tied,
            "services_slot": self.services_slot,
            "image_rootfs": str(self.image_rootfs) if self.image_rootfs else None,
            "postgres": _fields(self.postgres),
            "s3": _fields(self.s3),
            "gcs": _fields(self.gcs),
            "files": _fields(self.files),
            "vendor": _fields(self.vendor),
            "oidc": _fields(self.oidc),
            "challtestsrv": _fields(self.challtestsrv),
            "pebble": _fields(self.pebble),
            "hosts": [_host_fields(h) for h in self.hosts],
        }
        path = self.run_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir: Path) -> LocalCloud:
        state = json.loads((run_dir / "state.json").read_text())
        cloud = cls(
            run_dir=Path(state["run_dir"]),
            tied=state["tied"],
            services_slot=state["services_slot"],
            image_rootfs=Path(state["image_rootfs"]) if state["image_rootfs"] else None,
        )
        if state["postgres"]:
            cloud.postgres = Postgres(**{**state["postgres"], "run_dir": cloud.run_dir})
        if state["s3"]:
            cloud.s3 = S3Server(**{**state["s3"], "run_dir": cloud.run_dir})
        if state["gcs"]:
            cloud.gcs = GcsEmulator(**{**state["gcs"], "run_dir": cloud.run_dir})
        if state.get("files"):
            cloud.files = FileServer(**{**state["files"], "run_dir": cloud.run_dir})
        if state.get("vendor"):
            cloud.vendor = VendorFiles(**{**state["vendor"], "run_dir": cloud.run_dir})
        if state.get("oidc"):
            cloud.oidc = OidcProvider(**{**state["oidc"], "run_dir": cloud.run_dir})
        if state.get("challtestsrv"):
            cloud.challtestsrv = ChallTestSrv(**{**state["challtestsrv"], "run_dir": cloud.run_dir})
        if state.get("pebble"):
            cloud.pebble = Pebble(**{**state["pebble"], "run_dir": cloud.run_dir})
        cloud.hosts = [_load_host(h, cloud.tied) for h in state["hosts"]]
        return cloud


def sweep_stale(log=print) -> None:
    """Remove what an earlier run left when it was killed outright (its processes are gone).

    Tied processes die with the process that started them; their links, NAT
    rules and files stay. A run counts as stale only when none of its PIDs is
    alive, so a concurrent run is never touched.
    """
    from tests.localcloud.procs import alive

    if not RUNS_ROOT.exists():
        return
    for state in RUNS_ROOT.glob("*/state.json"):
        try:
            cloud = LocalCloud.load(state.parent)
        except (ValueError, KeyError, OSError):
            continue
        pids = [s.pid for s in cloud._services() if s is not None and s.pid]
        pids += [h.supervisor_pid for h in cloud.hosts if h.supervisor_pid]
        if cloud.tied and pids and not any(alive(pid) for pid in pids):
            log(f"removing the remains of a killed local cloud run: {cloud.run_dir}")
            cloud.down()


def _host_fields(host: FreshHost) -> dict:
    return {
        "slot": host.slot,
        "run_dir": str(host.run_dir),
        "supervisor_pid": host.supervisor_pid,
        "flavour": host.flavour,
        "user": host.user,
        "instance_id": host.instance_id,
        "stack_host_key": host.stack_host_key,
        "limits": vars(host.limits) if host.limits else None,
        "lowers": host.lowers,
        "snapshot": host.snapshot,
    }


def _load_host(fields: dict, tied: bool) -> FreshHost:
    host = FreshHost(fields["slot"], Path(fields["run_dir"]), tied, fields["supervisor_pid"])
    host.flavour = fields.get("flavour", host.flavour)
    host.user = fields.get("user", host.user)
    host.instance_id = fields.get("instance_id", "")
    host.stack_host_key = fields.get("stack_host_key", "")
    host.limits = Limits(**fields["limits"]) if fields.get("limits") else None
    host.lowers = list(fields.get("lowers", []))
    host.snapshot = list(fields.get("snapshot", []))
    return host


def _fields(service) -> dict | None:
    if service is None:
        return None
    data = dict(vars(service))
    data.pop("run_dir", None)
    return data


def extra_ca_certs() -> list[str]:
    """CA certificates this machine trusts beyond Debian's bundle (e.g. a TLS-intercepting proxy's)."""
    return sorted(str(p) for p in Path("/usr/local/share/ca-certificates").rglob("*.crt"))


__all__ = ["LocalCloud", "RUNS_ROOT", "CACHE_ROOT", "extra_ca_certs"]
