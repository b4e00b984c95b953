"""The nginx site as rendered, run by this machine's nginx: while the drain flag exists,
/health answers 503 to an address other than loopback (a load balancer's check), the
servers' own answer to loopback (the kit's checks), and the API keeps being served."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from provisioning.layout import PATHS
from provisioning.render import render
from tests.localcloud.procs import free_port, stop, wait_for
from tests.unit.test_templates import make_context, make_deployment

pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("curl")), reason="needs nginx"),
]


class Server(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        body = f"server answered {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture
def site(tmp_path, pem_dir):
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    ctx = make_context(make_deployment(pem_dir))
    ctx.update(tls_cert=str(pem_dir / "server.crt"), tls_key=str(pem_dir / "server.key"))
    port, flag = free_port("127.0.0.1"), tmp_path / "draining"
    text = render("nginx-mlflow.conf.j2", ctx)
    text = text.replace(PATHS["drain_flag"], str(flag))
    text = re.sub(r"include /etc/nginx/\S+;", "", text)
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl;")
    text = text.replace("listen [::]:443 ssl http2;", "")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        # Workers as root here: the flag's folder is the test's private tmp_path.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\nevents {{}}\n"
        f"http {{\n access_log {tmp_path}/logs/access.log;\n"
        f" upstream mlflow {{ server 127.0.0.1:{backend.server_address[1]}; }}\n{text}\n}}\n"
    )
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "logs/error.log"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: code(port, "/health") == "200", what="the site", timeout=10)
        yield port, flag
    finally:
        stop(nginx.pid)
        backend.shutdown()


def code(port: int, path: str, source: str = "127.0.0.1") -> str:
    return subprocess.run(
        ["curl", "-sk", "--interface", source, "-o", "/dev/null", "-w", "%{http_code}",
         f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip


def test_a_drained_host_fails_the_balancers_check_and_keeps_serving(site):
    port, flag = site
    balancer = "127.0.0.2"  # not loopback's 127.0.0.1 to the site's rule
    assert code(port, "/health", balancer) == "200"
    flag.touch()
    assert code(port, "/health", balancer) == "503"
    assert code(port, "/health") == "200"
    assert code(port, "/api/2.0/mlflow/experiments/search", balancer) == "200"
    flag.unlink()
    assert code(port, "/health", balancer) == "200"
