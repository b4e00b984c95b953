"""make test's two workers: the groups tests/conftest.py gives reach pytest-xdist."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(
    "PYTEST_XDIST_WORKER" not in os.environ, reason="runs under pytest -n (make test)"
)
def test_this_test_runs_in_its_worker_group(request):
    # --dist loadgroup marks a grouped test's ID with "@<group>"; without it every test is
    # its own group, the e2e hosts are bootstrapped on both workers and a module's tests
    # that share one host in order are split between them.
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not --dist loadgroup")
    assert request.node.nodeid.endswith("@unit-and-service"), request.node.nodeid
