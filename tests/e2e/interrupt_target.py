"""Run only by test_interrupting_a_test_run_leaves_nothing_running: holds a cloud until SIGINT."""

import os
import time
from pathlib import Path

import pytest

from tests.localcloud.cloud import LocalCloud

RUN_DIR = os.environ.get("MLFLOW_KIT_INTERRUPT_RUN_DIR")


@pytest.fixture
def held_cloud():
    cloud = LocalCloud.up(tied=True, run_dir=Path(RUN_DIR))
    try:
        cloud.new_host()
        yield cloud
    finally:
        started = time.monotonic()
        print(f"interrupted: taking the local cloud down ({RUN_DIR})", flush=True)
        cloud.down()
        print(f"local cloud down in {time.monotonic() - started:.1f}s", flush=True)


@pytest.mark.skipif(not RUN_DIR, reason="started only by the interrupt test")
def test_hold(held_cloud):
    (Path(RUN_DIR) / "ready").write_text("ready\n")
    time.sleep(600)
