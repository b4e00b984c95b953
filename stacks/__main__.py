"""Entry point ``pulumi up`` runs (Pulumi.yaml ``main: stacks/``)."""

import sys
from pathlib import Path

# Pulumi runs this directory as a script; make the ``stacks`` package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402

from stacks.program import main  # noqa: E402

for name, value in main().items():
    pulumi.export(name, value)
