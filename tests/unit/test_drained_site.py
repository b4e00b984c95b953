"""The nginx site as rendered, run by this machine's nginx: while the drain flag exists,
/health answers 503 to an address other than loopback (a load balancer's check), the
servers' own answer to loopback (the kit's checks), and the API keeps being served."""

from __future__ import annotations

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.localcloud.procs import free_port, stop, wait_for
from tests.unit.nginx_site import start_site
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
    # The flag where this test can create it.
    ctx = {**ctx, "paths": {**ctx["paths"], "drain_flag": str(flag)}}
    upstream = f"upstream mlflow {{ server 127.0.0.1:{backend.server_address[1]}; }}"
    nginx = start_site(tmp_path, ctx, upstream, port)
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
