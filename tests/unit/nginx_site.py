"""The kit's nginx site as rendered, run by this machine's nginx on a loopback port (the
service tests of the drained site and of the upstream's affinity)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from provisioning.render import render


def start_site(tmp_path: Path, ctx: dict, upstream: str, port: int) -> subprocess.Popen:
    """nginx serving ``nginx-mlflow.conf.j2`` rendered from ``ctx`` on 127.0.0.1:``port``
    (TLS, no HTTP/2, no includes), with ``upstream`` (an ``upstream mlflow`` block) beside
    it; its files under ``tmp_path``. The caller stops it by PID."""
    text = render("nginx-mlflow.conf.j2", ctx)
    text = re.sub(r"include /etc/nginx/\S+;", "", text)
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl;")
    text = text.replace("listen [::]:443 ssl http2;", "")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        # Workers as root here: the test's files are in its private tmp_path.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\n access_log {tmp_path}/logs/access.log;\n{upstream}\n{text}\n}}\n"
    )
    return subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "logs/error.log"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
