"""A load balancer for the local cloud's groups: nginx in front of the hosts' port 443,
with a health checker that takes a host out while its /health fails.

``Balancer(address, backends, run_dir)`` runs this machine's nginx (its own prefix,
configuration and pid file under ``run_dir/balancer``, started and stopped by PID like
the other local-cloud services) listening on ``address`` and proxying to each backend
(``host:port``) over HTTPS, and a checker process (``python -m
tests.localcloud.balancer check ...``, also stopped by PID) that asks each backend's
``/health`` every ``interval`` seconds (2), marks it down after ``fall`` (2) failures
in a row and up after ``rise`` (2) successes, and then rewrites the upstream file and
reloads nginx gracefully (SIGHUP: old workers finish the requests they hold, as the
clouds' connection draining lets them). Its transitions go to ``events.jsonl`` and
nginx's access log names the backend that answered each request (``$upstream_addr``).

What the clouds' load balancers do that this one does not:

- TLS at the balancer with its own certificate (Google-managed, ACM or the stack's):
  this one listens on plain HTTP, and does not verify the backends' certificates
  (``proxy_ssl_verify off``; GCP and the ALB do not verify them either, but they do
  require TLS to the backend, which this one also does);
- a connection-draining timeout: GCP's backend service (30 s) and the ALB's
  deregistration delay (30 s) cut requests still running after it; here a reload lets
  old workers finish whatever they hold, however long;
- starting state: the clouds treat a new backend as unhealthy until it passes its
  checks; here every backend starts up;
- several zones and front ends, health checks from many probers (each prober counts
  on its own), cross-zone balancing, slow start, request routing by path or host,
  Cloud Armor or security groups in front, access logs in the cloud's format;
- the check's own timeout and "healthy" ranges are the clouds' (GCP 5 s, 200 only;
  ALB 5 s, 200 by default); here 1.5 s, 200 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.localcloud.procs import free_port, spawn, stop, wait_for

NGINX = "/usr/sbin/nginx"
CHECK_TIMEOUT_S = 1.5


def upstream_conf(backends: list[str], down: set[str]) -> str:
    lines = ["upstream group {"]
    for backend in backends:
        lines.append(f"    server {backend}{' down' if backend in down else ''};")
    return "\n".join([*lines, "    keepalive 16;", "}", ""])


@dataclass
class Balancer:
    address: str
    #: ``host:port`` of each backend.
    backends: list[str]
    run_dir: Path
    tied: bool = True
    #: How the balancer reaches the backends (the service tests use plain HTTP ones).
    scheme: str = "https"
    interval: float = 2.0
    fall: int = 2
    rise: int = 2
    port: int = 0
    nginx_pid: int = 0
    checker_pid: int = 0
    down: set[str] = field(default_factory=set)

    @property
    def prefix(self) -> Path:
        return self.run_dir / "balancer"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def upstream_file(self) -> Path:
        return self.prefix / "upstream.conf"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def events_file(self) -> Path:
        return self.prefix / "events.jsonl"

    def start(self) -> None:
        self.port = self.port or free_port(self.address)
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        self.upstream_file.write_text(upstream_conf(self.backends, self.down))
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            f"pid {self.prefix}/nginx.pid;\n"
            f"error_log {self.prefix}/logs/error.log;\n"
            + ("user root;\n" if os.geteuid() == 0 else "")
            + "events { worker_connections 512; }\n"
            "http {\n"
            '    log_format balancer \'$remote_addr [$time_local] "$request" $status '
            "$upstream_addr $request_time';\n"
            f"    access_log {self.access_log} balancer;\n"
            f"    client_body_temp_path {self.prefix}/body;\n"
            f"    proxy_temp_path {self.prefix}/proxy;\n"
            f"    include {self.upstream_file};\n"
            "    server {\n"
            f"        listen {self.address}:{self.port};\n"
            "        client_max_body_size 0;\n"
            "        proxy_request_buffering off;\n"
            "        proxy_buffering off;\n"
            "        proxy_read_timeout 3600s;\n"
            "        proxy_http_version 1.1;\n"
            '        proxy_set_header Connection "";\n'
            "        proxy_set_header Host $host;\n"
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            # A stand-in: the clouds' balancers do not verify backend certificates either.
            "        proxy_ssl_verify off;\n"
            "        location / {\n"
            f"            proxy_pass {self.scheme}://group;\n"
            "        }\n"
            "    }\n"
            "}\n"
        )
        proc = spawn(
            [NGINX, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "logs/error.log"),
             "-g", "daemon off;"],
            log=self.prefix / "nginx.out", tied=self.tied, stop_signal=signal.SIGQUIT,
        )  # fmt: skip
        self.nginx_pid = proc.pid
        wait_for(self._listening, what="balancer (nginx)", timeout=15)
        checker = spawn(
            [sys.executable, "-m", "tests.localcloud.balancer", "check",
             "--upstream", str(self.upstream_file), "--nginx-pid", str(self.nginx_pid),
             "--events", str(self.events_file), "--scheme", self.scheme,
             "--interval", str(self.interval), "--fall", str(self.fall), "--rise", str(self.rise),
             *self.backends],
            log=self.prefix / "checker.log", tied=self.tied,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self.checker_pid = checker.pid

    def _listening(self) -> bool:
        import socket

        with socket.create_connection((self.address, self.port), timeout=1):
            return True

    def events(self) -> list[dict]:
        """The checker's transitions: ``{"t": epoch seconds, "backend", "state": up|down}``."""
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line]

    def answered_by(self) -> list[str]:
        """The backend that answered each request so far, from the access log, in order."""
        if not self.access_log.exists():
            return []
        return [line.rsplit(" ", 2)[1] for line in self.access_log.read_text().splitlines()]

    def stop(self) -> None:
        if self.checker_pid:
            stop(self.checker_pid)
            self.checker_pid = 0
        if self.nginx_pid:
            stop(self.nginx_pid, signal.SIGQUIT)
            self.nginx_pid = 0


# --------------------------------------------------------------------------- the checker


def check_once(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT_S, context=context) as answer:  # noqa: S310
            return answer.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def run_checker(args: argparse.Namespace) -> None:
    backends: list[str] = args.backends
    down: set[str] = set()
    streak = {b: 0 for b in backends}  # failures in a row while up, successes while down
    upstream = Path(args.upstream)
    while True:
        started = time.monotonic()
        changed = False
        for backend in backends:
            healthy = check_once(f"{args.scheme}://{backend}/health")
            is_down = backend in down
            streak[backend] = streak[backend] + 1 if healthy == is_down else 0
            if streak[backend] >= (args.rise if is_down else args.fall):
                streak[backend] = 0
                (down.discard if is_down else down.add)(backend)
                changed = True
                with open(args.events, "a") as log:
                    state = "up" if is_down else "down"
                    log.write(json.dumps({"t": time.time(), "backend": backend, "state": state}))
                    log.write("\n")
        if changed:
            tmp = upstream.with_suffix(".new")
            tmp.write_text(upstream_conf(backends, down))
            tmp.replace(upstream)
            os.kill(args.nginx_pid, signal.SIGHUP)  # graceful: old workers finish their requests
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tests.localcloud.balancer")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="health-check the backends and keep nginx's upstream")
    check.add_argument("--upstream", required=True)
    check.add_argument("--nginx-pid", type=int, required=True)
    check.add_argument("--events", required=True)
    check.add_argument("--scheme", default="https")
    check.add_argument("--interval", type=float, default=2.0)
    check.add_argument("--fall", type=int, default=2)
    check.add_argument("--rise", type=int, default=2)
    check.add_argument("backends", nargs="+")
    run_checker(parser.parse_args(argv))


if __name__ == "__main__":
    main()
