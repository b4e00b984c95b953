"""Stand-ins for what the stacks' first-boot scripts download from the clouds' own servers.

A cloud-like host must run the stack's user data byte for byte, and tests may
not reach the internet. So every ``http(s)://`` URL in the user data or startup
script must have a stand-in here, or the host is refused (``downloads``). For
each one the guest's ``/etc/hosts`` maps the URL's host name to the local cloud's
address, where ``vendor_https`` serves the stand-in file over HTTPS with a
certificate from the local cloud's own CA, which the guest trusts (its
certificate is installed into the guest's trust store with ``update-ca-certificates``).

Known stand-ins:

- ``https://s3.<region>.amazonaws.com/amazon-ssm-<region>/latest/debian_amd64/amazon-ssm-agent.deb``
  (AWS, ``awsSshAccess: session-manager``): a package named ``amazon-ssm-agent``
  whose ``amazon-ssm-agent.service`` runs a process that does nothing.

What the real thing does that this does not:

- the real package is signed by AWS, about 30 MB, and its agent registers the
  instance with Systems Manager using the instance profile's credentials through
  the instance metadata service; ``aws ssm start-session`` then reaches sshd
  through it. None of that exists here: the stand-in only proves the user data
  downloaded, installed, enabled and started it;
- the real package's maintainer scripts start the service themselves;
- S3 answers from AWS's certificate chain, which the guest trusts through
  Debian's CA bundle; here the guest also trusts the local cloud's CA, so a
  download that would fail on certificate grounds on AWS succeeds here if the
  name matches;
- DNS: the name resolves through ``/etc/hosts`` (cloud-init leaves it alone
  unless ``manage_etc_hosts`` is set), not through the VPC's resolver.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.localcloud.pki import LocalCA
from tests.localcloud.procs import run

#: GCP's metadata server, as a startup script reaches it; the cloud-like guest's own
#: stand-in serves it (``cloudlike.METADATA_SERVER``), not the vendor server.
METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/"
URL = re.compile(r"""\bhttps?://[^\s'"`)<>]+""")
SSM_AGENT = re.compile(
    r"^https://(?P<host>s3\.[a-z0-9-]+\.amazonaws\.com)"
    r"/(?P<path>amazon-ssm-[a-z0-9-]+/latest/debian_amd64/amazon-ssm-agent\.deb)$"
)
SSM_AGENT_SERVICE = """\
[Unit]
Description=amazon-ssm-agent (local cloud stand-in: registers with nothing)
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/bin/amazon-ssm-agent
Restart=always
RestartSec=15

[Install]
WantedBy=multi-user.target
"""
SSM_AGENT_PROGRAM = """\
#!/bin/sh
echo "amazon-ssm-agent: local cloud stand-in; there is no Systems Manager to register with"
exec sleep infinity
"""


@dataclass(frozen=True)
class Download:
    url: str
    host: str
    path: str
    kind: str


def downloads(*scripts: str | None) -> list[Download]:
    """Every URL the scripts fetch, each with its stand-in; raises for one without."""
    found = []
    for script in scripts:
        for url in URL.findall(script or ""):
            if url.startswith(METADATA_URL):
                continue  # served by the guest's metadata-server stand-in (cloudlike.py)
            match = SSM_AGENT.match(url)
            if not match:
                raise ValueError(
                    f"the first-boot script fetches {url}, which the local cloud has no stand-in for"
                    " (tests may not reach the internet); add one to tests/localcloud/vendor.py"
                )
            found.append(Download(url, match["host"], match["path"], "amazon-ssm-agent"))
    return found


def build_ssm_agent_deb(destination: Path) -> Path:
    """The stand-in ``amazon-ssm-agent`` package, built with dpkg-deb."""
    if destination.exists():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssm-standin-") as tmp:
        root = Path(tmp) / "pkg"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN/control").write_text(
            "Package: amazon-ssm-agent\n"
            "Version: 0.0.0-localcloud\n"
            "Architecture: amd64\n"
            "Maintainer: mlflow-server-kit local cloud <localcloud@invalid>\n"
            "Description: local cloud stand-in for the AWS Systems Manager agent\n"
            " Runs a service named amazon-ssm-agent that registers with nothing.\n"
        )
        program = root / "usr/bin/amazon-ssm-agent"
        program.parent.mkdir(parents=True)
        program.write_text(SSM_AGENT_PROGRAM)
        program.chmod(0o755)
        unit = root / "lib/systemd/system/amazon-ssm-agent.service"
        unit.parent.mkdir(parents=True)
        unit.write_text(SSM_AGENT_SERVICE)
        built = Path(tmp) / "amazon-ssm-agent.deb"
        run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(built)])
        shutil.move(built, destination)
    return destination


def trust_in_guest(rootfs: Path, ca: LocalCA) -> None:
    """Install the local cloud's CA into a guest's trust store (before it boots)."""
    target = rootfs / "usr/local/share/ca-certificates/mlflow-kit-localcloud-ca.crt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert, target)
    subprocess.run(
        ["chroot", str(rootfs), "update-ca-certificates"], capture_output=True, check=True
    )
