"""A host that boots like a fresh cloud VM: cloud-init, a busy apt, a late sshd, small memory.

``CloudLike("aws")`` or ``CloudLike("gcp")`` (or ``CloudLike.from_stack_file``)
asks ``LocalCloud.new_host(like=...)`` for a host that, on its first boot:

- runs cloud-init from a NoCloud seed holding what the stack program declares for
  its VM (``userdata.declared_instance``, the program run under mocks with the
  host's own login key substituted for the configured ones):
  AWS: the instance's ``user_data`` byte for byte, and the key pair's key as
  ``public-keys``, which cloud-init gives to the image's default user ``admin``
  (Debian's AMIs name it so), before the user data's own users;
  GCP: the ``ssh-keys`` metadata, turned into the users Google's guest agent
  would create (see ``guest_agent_cloud_config``), and the ``startup-script``
  metadata, run on every boot;
- has cloud-init generate the SSH host keys (the test reads them from the root
  file system, as an operator reads them from the console or guest attributes);
- holds apt's and dpkg's locks for ``lock_seconds`` from before sshd starts
  (``unattended-upgrade`` below), while cloud-init runs its own stages;
- starts sshd ``ssh_delay_seconds`` late (every boot);
- is limited to the memory and vCPUs of the stack's machine type (``limits.py``).

The first boot, deterministically (same order every time, systemd's ordering):

1. cloud-init's local and network stages (before ``sysinit.target``): the seed is
   read, the users are created and the host keys generated. ``new_host(wait=False)``
   returns here, with ``known_hosts`` written.
2. ``localcloud-first-boot-upgrade.service`` takes apt's and dpkg's locks and
   reports ready; only then may ``ssh.service`` start. It releases them
   ``lock_seconds`` later. cloud-init's config stage runs meanwhile.
3. sshd starts ``ssh_delay_seconds`` after its turn; connections are refused
   until then. The boot counts as finished (``systemctl is-system-running``) while
   the locks are still held.
4. cloud-init's final stage runs the user data's ``runcmd`` / the startup script
   *while the locks may still be held*: a user-data command that needs dpkg and
   does not wait for the lock fails, as it can on a real first boot; and
   ``cloud-init status --wait`` returns while the locks are still held.

Stand-ins, and what the real thing does that they do not:

- the lock holder is not unattended-upgrades: it is a script named
  ``unattended-upgrade`` (so ``/proc/<pid>/comm``, ``fuser`` and apt's own "It is
  held by process N (unattended-upgr)" name it as on a real VM) that takes the
  locks with python-apt, i.e. apt's own locking code: fcntl write locks on
  ``/var/lib/dpkg/lock-frontend``, ``/var/lib/dpkg/lock``,
  ``/var/lib/apt/lists/lock`` and ``/var/cache/apt/archives/lock``. The real
  ``apt-daily.service`` then ``apt-daily-upgrade.service`` hold the list lock,
  then the dpkg locks, at a random time (timers with up to 12 h of random delay),
  download and install upgrades, and may run for minutes or not at all; here all
  four locks are held at once, for a fixed time, from the start of the first
  boot, and nothing is upgraded. The ``apt-daily*.service`` units are not the
  ones holding it (``systemd-run -p After=apt-daily-upgrade.service`` does not wait
  for it). The real timers stay installed and enabled but are moved to 2099 so
  they never fire during a test;
- sshd's delay is a ``sleep`` before sshd first starts in a boot: connections are
  refused (RST); on a real VM they first time out (no network yet), then are refused;
- GCP: Debian's GCE images have no cloud-init. Google's guest agent creates each
  ``user`` of an ``ssh-keys`` line (``useradd -m -s /bin/bash``, groups adm, dip,
  plugdev, video when they exist, and ``google-sudoers``, which
  ``/etc/sudoers.d/google_sudoers`` gives passwordless sudo) and keeps watching the
  metadata, adding and removing users and keys while the VM runs;
  ``google-startup-scripts.service`` runs the startup script on every boot after
  the network is online and logs it to the journal. Here cloud-init does both,
  once from the seed: users from cloud-config, the script from
  ``scripts/per-boot``. Host keys come from cloud-init, not from the guest agent,
  and are not published as guest attributes (the stack's startup script replaces
  them with the stack's own key, as on GCE);
- GCP's metadata server: ``localcloud-metadata.service`` in the guest serves the
  instance's metadata values (``Declared.metadata``) at
  ``http://metadata.google.internal/computeMetadata/v1/instance/attributes/KEY``,
  refusing a request without ``Metadata-Flavor: Google`` with 403 as Google's does.
  The real one listens on 169.254.169.254 outside the VM, also serves the project's
  attributes, the service account's tokens, ``?recursive``/``?wait_for_change``,
  and sees metadata changes while the VM runs; this one listens on 127.0.0.254
  inside the guest (``/etc/hosts`` names it), serves instance attributes only, as
  they were declared at creation, and is started by the startup-script runner
  before the script (the real one is there before the guest boots);
- AWS: no instance metadata service (IMDSv2), no instance profile credentials,
  no EC2 datasource (cloud-init reads the same user data and key from the seed);
  downloads from AWS's servers are served by ``vendor.py``'s stand-ins;
- the hostname is ``mlk-host-N``, not the cloud's (ip-10-..., or the instance name);
- the SSH port is reachable from this machine only; no firewall or security group
  sits in front of it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.localcloud.userdata import Declared, declared_instance, stack_file_config

#: Debian's AMIs name the image's default user ``admin``; cloud-init's Debian default is ``debian``.
AWS_DEFAULT_USER_CONFIG = """\
# As Debian's EC2 images: the default user, who gets the key pair's key, is admin.
system_info:
  default_user:
    name: admin
"""
#: Groups Google's guest agent puts its users in (those that exist on Debian), plus its sudo group.
GUEST_AGENT_GROUPS = ("adm", "dip", "plugdev", "video")
GOOGLE_SUDOERS = "google-sudoers"
STANDIN_DIR = "/usr/local/lib/localcloud"
HOLDER_UNIT = "localcloud-first-boot-upgrade.service"
FIRST_BOOT_DONE = "/var/lib/localcloud/first-boot-upgrade.done"

LOCK_HOLDER = '''\
#!/usr/bin/python3
"""Local cloud stand-in for unattended-upgrades on a VM's first boot (see the kit's
tests/localcloud/cloudlike.py): holds apt's and dpkg's locks, then lets go."""

import os
import socket
import sys
import time

import apt_pkg

LOCKS = ("/var/lib/apt/lists/lock", "/var/cache/apt/archives/lock")


def notify(state):
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


def main():
    seconds = float(os.environ.get("LOCALCLOUD_HOLD_SECONDS", "60"))
    os.makedirs(os.path.dirname("{done}"), exist_ok=True)
    open("{done}", "w").close()
    apt_pkg.init()
    # apt's own locking: /var/lib/dpkg/lock-frontend, then /var/lib/dpkg/lock.
    apt_pkg.pkgsystem_lock()
    held = [apt_pkg.get_lock(path, True) for path in LOCKS]
    print(f"holding apt's and dpkg's locks for {{seconds:.0f}}s", flush=True)
    notify(f"READY=1\\nSTATUS=holding apt's and dpkg's locks for {{seconds:.0f}}s")
    time.sleep(seconds)
    for fd in held:
        os.close(fd)
    apt_pkg.pkgsystem_unlock()
    print("released apt's and dpkg's locks", flush=True)
    return 0


sys.exit(main())
'''.replace("{done}", FIRST_BOOT_DONE)

HOLDER_UNIT_TEXT = f"""\
# Local cloud stand-in: unattended-upgrades busy on the first boot (tests/localcloud/cloudlike.py).
[Unit]
Description=Local cloud stand-in: unattended-upgrades holding apt's locks on first boot
Before=ssh.service
ConditionPathExists=!{FIRST_BOOT_DONE}

[Service]
Type=notify
Environment=LOCALCLOUD_HOLD_SECONDS={{seconds}}
ExecStart={STANDIN_DIR}/unattended-upgrade

[Install]
WantedBy=multi-user.target
"""

SSH_DELAY_DROPIN = f"""\
# Local cloud stand-in: sshd answers only some seconds into each boot, as on a cloud VM,
# and never before the first-boot apt stand-in holds its locks. A restart is not delayed.
[Unit]
After={HOLDER_UNIT}

[Service]
ExecStartPre=/bin/sh -c 'test -e /run/localcloud-sshd-booted || sleep {{seconds}}; touch /run/localcloud-sshd-booted'
"""

#: apt's timers stay enabled, as on Debian's images, but do not fire at random moments
#: of a test: the first-boot stand-in plays their run.
TIMER_DROPIN = """\
# Local cloud: moved out of any test's way; see tests/localcloud/cloudlike.py.
[Timer]
OnCalendar=
OnCalendar=2099-01-01 00:00:00
RandomizedDelaySec=0
"""

STARTUP_SCRIPT_RUNNER = """\
#!/bin/sh
# Local cloud stand-in for google-startup-scripts.service: the startup-script metadata,
# on every boot (the guest agent runs a script without #! with /bin/bash), once the
# metadata server's stand-in answers.
systemctl start localcloud-metadata.service
for i in $(seq 50); do
  python3 -c 'import socket; socket.create_connection(("127.0.0.254", 80), 1)' 2>/dev/null && break
  sleep 0.2
done
script=/var/lib/localcloud/metadata/startup-script
if head -c 2 "$script" | grep -q '^#!'; then exec "$script"; fi
exec /bin/bash "$script"
"""


METADATA_ADDRESS = "127.0.0.254"
METADATA_DIR = "/var/lib/localcloud/metadata/attributes"
#: GCP's metadata server (instance attributes only), run in the guest by python3.
METADATA_SERVER = """\
import http.server, os, sys
ROOT = "/computeMetadata/v1/instance/attributes/"
DIR = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "Metadata Server for VM"

    def do_GET(self):
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.answer(403, b"Missing Metadata-Flavor:Google header.\\n")
        path = self.path.split("?", 1)[0]
        key = path[len(ROOT):] if path.startswith(ROOT) else ""
        if path == ROOT:
            names = sorted(os.listdir(DIR))
            return self.answer(200, "".join(n + "\\n" for n in names).encode())
        if not key or "/" in key or not os.path.isfile(os.path.join(DIR, key)):
            return self.answer(404, b"Not Found\\n")
        with open(os.path.join(DIR, key), "rb") as f:
            self.answer(200, f.read())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer((sys.argv[2], 80), Handler).serve_forever()
"""
METADATA_UNIT = "localcloud-metadata.service"
METADATA_UNIT_TEXT = f"""\
[Unit]
Description=Local cloud stand-in for GCP's metadata server (instance attributes)
Before=cloud-final.service

[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/localcloud/metadata-server {METADATA_DIR} {METADATA_ADDRESS}
Restart=always

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class CloudLike:
    """How a cloud-like host boots: the stack it comes from, and its first-boot behaviour.

    ``config``: the stack's settings as ``pulumi config set`` takes them (None: the
    stack tests' minimal dev stack); ``overrides``: single keys changed (None
    removes one), e.g. ``{"awsSshAccess": "session-manager", "sshAllowedCidrs": None}``.
    """

    cloud: str
    config: dict[str, object] | None = None
    overrides: dict[str, object | None] = field(default_factory=dict)
    stack: str = ""
    #: How long apt's and dpkg's locks are held from the start of the first boot (0: not at all).
    lock_seconds: float = 60.0
    #: How late sshd starts on every boot.
    ssh_delay_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.cloud not in ("aws", "gcp"):
            raise ValueError(f"cloud {self.cloud!r}: allowed aws, gcp")

    @classmethod
    def from_stack_file(cls, path: Path | str, **options) -> CloudLike:
        """A host like the VM of ``stacks/Pulumi.<stack>.yaml``."""
        config = stack_file_config(Path(path))
        cloud = str(config.get("mlflow-server:cloud", ""))
        stack = Path(path).name.removeprefix("Pulumi.").removesuffix(".yaml")
        return cls(cloud, config=config, stack=stack, **options)

    def declare(self, ssh_public_key: str) -> Declared:
        """What the stack's VM declares, with ``ssh_public_key`` as its only SSH key."""
        return declared_instance(
            self.cloud,
            self.config,
            ssh_public_key,
            self.stack or f"{self.cloud}-localcloud",
            self.overrides,
        )


def guest_agent_cloud_config(ssh_keys: str, startup_script: str | None) -> str:
    """cloud-config doing what Google's guest agent and startup-script runner do at first boot."""
    users: dict[str, list[str]] = {}
    for line in ssh_keys.splitlines():
        user, sep, key = line.strip().partition(":")
        if sep and user and key.strip():
            users.setdefault(user, []).append(key.strip())
    document: dict[str, object] = {
        "groups": [GOOGLE_SUDOERS],
        "users": [
            {
                "name": user,
                "groups": [*GUEST_AGENT_GROUPS, GOOGLE_SUDOERS],
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": keys,
            }
            for user, keys in users.items()
        ],
        "write_files": [
            {
                "path": "/etc/sudoers.d/google_sudoers",
                "permissions": "0440",
                "content": f"%{GOOGLE_SUDOERS} ALL=(ALL:ALL) NOPASSWD:ALL\n",
            }
        ],
    }
    if startup_script:
        document["write_files"] += [
            {
                "path": "/var/lib/localcloud/metadata/startup-script",
                "permissions": "0700",
                "content": startup_script,
            },
            {
                "path": "/var/lib/cloud/scripts/per-boot/google-startup-scripts",
                "permissions": "0755",
                "content": STARTUP_SCRIPT_RUNNER,
            },
        ]
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def user_data(declared: Declared) -> str:
    """The seed's user-data: the stack's own on AWS, the guest agent's work on GCP."""
    if declared.cloud == "aws":
        return declared.user_data or ""
    return guest_agent_cloud_config(declared.ssh_keys or "", declared.startup_script)


def instance_id(cloud: str) -> str:
    if cloud == "aws":
        return "i-0" + secrets.token_hex(8)
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def prepare(
    rootfs: Path,
    declared: Declared,
    like: CloudLike,
    *,
    hostname: str,
    etc_hosts: dict[str, str],
) -> str:
    """Write the seed and the first-boot stand-ins into a fresh copy; the instance ID."""
    seed = rootfs / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True, exist_ok=True)
    instance = instance_id(declared.cloud)
    meta: dict[str, object] = {"instance-id": instance, "local-hostname": hostname}
    if declared.key_pair_public_key:
        meta["public-keys"] = [declared.key_pair_public_key]
    (seed / "meta-data").write_text(yaml.safe_dump(meta, sort_keys=False))
    (seed / "user-data").write_text(user_data(declared))
    if declared.cloud == "aws":
        (rootfs / "etc/cloud/cloud.cfg.d/01_debian_cloud.cfg").write_text(AWS_DEFAULT_USER_CONFIG)
    if etc_hosts:
        with open(rootfs / "etc/hosts", "a") as hosts:
            hosts.write("# Local cloud stand-ins for the clouds' download servers (vendor.py)\n")
            for name, address in sorted(etc_hosts.items()):
                hosts.write(f"{address} {name}\n")
    system = rootfs / "etc/systemd/system"
    if declared.cloud == "gcp":
        _metadata_server(rootfs, system, declared.metadata or {})
    if like.lock_seconds > 0:
        standin = rootfs / STANDIN_DIR.lstrip("/")
        standin.mkdir(parents=True, exist_ok=True)
        (standin / "unattended-upgrade").write_text(LOCK_HOLDER)
        (standin / "unattended-upgrade").chmod(0o755)
        (system / HOLDER_UNIT).write_text(HOLDER_UNIT_TEXT.format(seconds=like.lock_seconds))
        wants = system / "multi-user.target.wants"
        wants.mkdir(exist_ok=True)
        (wants / HOLDER_UNIT).symlink_to(f"/etc/systemd/system/{HOLDER_UNIT}")
    if like.ssh_delay_seconds > 0:
        dropin = system / "ssh.service.d"
        dropin.mkdir(exist_ok=True)
        (dropin / "localcloud-not-yet.conf").write_text(
            SSH_DELAY_DROPIN.format(seconds=like.ssh_delay_seconds)
        )
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        dropin = system / f"{timer}.d"
        dropin.mkdir(exist_ok=True)
        (dropin / "localcloud.conf").write_text(TIMER_DROPIN)
    (rootfs / "var/lib/localcloud").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/lib/localcloud/declared.json").write_text(
        json.dumps({"cloud": declared.cloud, "instance_id": instance}) + "\n"
    )
    return instance


def host_keys_ready(rootfs: Path, instance: str) -> bool:
    """cloud-init's network stage (users, then host keys) has finished for this instance."""
    status = rootfs / "var/lib/cloud/data/status.json"
    instance_link = rootfs / "var/lib/cloud/instance"
    try:
        stages = json.loads(status.read_text())["v1"]
        current = Path(os.readlink(instance_link)).name == instance
    except (OSError, ValueError, KeyError):
        return False
    return current and bool((stages.get("init") or {}).get("finished"))


def _metadata_server(rootfs: Path, system: Path, metadata: dict[str, str]) -> None:
    """The guest's stand-in for GCP's metadata server, serving ``metadata``."""
    attributes = rootfs / METADATA_DIR.lstrip("/")
    attributes.mkdir(parents=True, exist_ok=True)
    attributes.parent.chmod(0o700)
    for key, value in metadata.items():
        path = attributes / key
        path.write_text(value)
        path.chmod(0o600)
    program = rootfs / "usr/local/lib/localcloud/metadata-server"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(METADATA_SERVER)
    (system / METADATA_UNIT).write_text(METADATA_UNIT_TEXT)
    wants = system / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / METADATA_UNIT).symlink_to(f"/etc/systemd/system/{METADATA_UNIT}")
    with open(rootfs / "etc/hosts", "a") as hosts:
        hosts.write("# Local cloud stand-in for GCP's metadata server\n")
        hosts.write(f"{METADATA_ADDRESS} metadata.google.internal\n")
