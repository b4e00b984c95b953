"""The nginx site and upstream as rendered, run by this machine's nginx in front of two
stand-in instances: a client's keep-alive connection stays with one instance (an instance
that sat out a request answers the next slower), separate connections use them all."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from provisioning.render import render
from tests.localcloud.procs import free_port, stop, wait_for
from tests.unit.nginx_site import start_site
from tests.unit.test_templates import make_context, make_deployment

pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("curl")), reason="needs nginx"),
]


class Instance(BaseHTTPRequestHandler):
    """Answers with its own port, as the instance nginx chose."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        body = str(self.server.server_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture
def site(tmp_path, pem_dir):
    instances = [ThreadingHTTPServer(("127.0.0.1", 0), Instance) for _ in range(2)]
    for instance in instances:
        threading.Thread(target=instance.serve_forever, daemon=True).start()
    ports = [instance.server_address[1] for instance in instances]
    ctx = make_context(make_deployment(pem_dir), ports=ports)
    ctx.update(tls_cert=str(pem_dir / "server.crt"), tls_key=str(pem_dir / "server.key"))
    port = free_port("127.0.0.1")
    nginx = start_site(tmp_path, ctx, render("nginx-upstream.conf.j2", ctx), port)
    try:
        wait_for(lambda: answers(port, 1) != [], what="the site", timeout=10)
        yield port, ports
    finally:
        stop(nginx.pid)
        for instance in instances:
            instance.shutdown()


def answers(port: int, requests: int) -> list[int]:
    """The instance that answered each of ``requests`` sent on one keep-alive connection."""
    url = f"https://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
    out = subprocess.run(
        ["curl", "-sk", "--http1.1", "-w", "\n", *[url] * requests],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    return [int(line) for line in out.split()]


def test_a_connection_stays_with_one_instance_and_connections_spread(site):
    port, instances = site
    for _ in range(3):
        served = answers(port, 12)
        assert len(served) == 12 and len(set(served)) == 1, served
    connections = Counter(answers(port, 1)[0] for _ in range(16))
    assert set(connections) == set(instances), connections
