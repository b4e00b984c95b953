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


def test_a_tests_marker_names_its_group_before_its_modules():
    import types

    from tests.conftest import worker_group

    def item(marks, module_group=None):
        module = types.SimpleNamespace(WORKER_GROUP=module_group)
        found = {name: types.SimpleNamespace(args=args) for name, args in marks.items()}
        return types.SimpleNamespace(module=module, get_closest_marker=found.get, callspec=None)

    e2e = {"e2e": ()}
    assert worker_group(item({**e2e, "worker_group": ("e2e-s3",)}, "e2e-other")) == "e2e-s3"
    assert worker_group(item(e2e, "e2e-s3")) == "e2e-s3"
    assert worker_group(item(e2e)) == "e2e-other"
    assert worker_group(item({})) == "unit-and-service"
