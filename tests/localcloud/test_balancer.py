"""The local cloud's load balancer against two tiny backends on 127.0.0.1: a backend whose
/health fails stops getting new requests within the detection time, one that recovers
gets them again, and a request in flight to a backend being taken out completes."""

from __future__ import annotations

import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.localcloud.balancer import Balancer

pytestmark = pytest.mark.service

#: fall (2) checks 2 s apart, the check in progress, and the reload.
DETECTION_S = 2 * 2 + 2 + 1


class Backend:
    """HTTP on 127.0.0.1: /health answers ``health``; /slow takes ``slow_s``; each request is
    answered with the backend's name."""

    def __init__(self, name: str):
        self.name, self.health, self.slow_s, self.served = name, 200, 12.0, 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/health":
                    code, body = backend.health, b"ok"
                else:
                    backend.served += 1
                    if self.path == "/slow":
                        time.sleep(backend.slow_s)
                    code, body = 200, backend.name.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def pair(tmp_path):
    a, b = Backend("a"), Backend("b")
    balancer = Balancer("127.0.0.1", [a.address, b.address], tmp_path, scheme="http")
    balancer.start()
    yield a, b, balancer
    balancer.stop()
    a.server.shutdown()
    b.server.shutdown()


def get(balancer: Balancer, path: str = "/") -> str:
    with urllib.request.urlopen(balancer.url + path, timeout=30) as answer:  # noqa: S310
        return answer.read().decode()


def wait_event(balancer: Balancer, backend: str, state: str, since: float) -> float:
    deadline = time.monotonic() + DETECTION_S + 5
    while time.monotonic() < deadline:
        for event in balancer.events():
            if event["backend"] == backend and event["state"] == state and event["t"] >= since:
                return event["t"] - since
        time.sleep(0.2)
    raise AssertionError(f"{backend} never marked {state}: {balancer.events()}")


def test_a_failing_backend_is_taken_out_and_a_recovered_one_taken_back(pair):
    a, b, balancer = pair
    assert {get(balancer) for _ in range(6)} == {"a", "b"}
    a.health, started = 503, time.time()
    took = wait_event(balancer, a.address, "down", started)
    time.sleep(0.5)  # the reload
    assert took <= DETECTION_S, took
    assert {get(balancer) for _ in range(10)} == {"b"}
    assert balancer.answered_by()[-10:] == [b.address] * 10
    a.health, started = 200, time.time()
    took = wait_event(balancer, a.address, "up", started)
    time.sleep(0.5)
    assert took <= DETECTION_S, took
    assert {get(balancer) for _ in range(6)} == {"a", "b"}


def test_a_request_in_flight_to_a_backend_being_taken_out_completes(pair):
    a, b, balancer = pair
    b.health = 503  # only a takes new requests once b is out
    wait_event(balancer, b.address, "down", 0)
    time.sleep(0.5)
    answers: list[str] = []
    slow = threading.Thread(target=lambda: answers.append(get(balancer, "/slow")))
    slow.start()
    time.sleep(0.5)
    b.health = 200
    a.health, started = 503, time.time()
    wait_event(balancer, a.address, "down", started)
    # a is out of the upstream now, its slow request still running: it finishes.
    assert a.served == 1 and slow.is_alive()
    slow.join(timeout=30)
    assert answers == ["a"]
