"""The kit's Fabric task collection (``fab --list`` from the repository root)."""

from __future__ import annotations

import importlib

from invoke import Collection, Task

# Each module contributes its @task functions under their own names.
TASK_MODULES = (
    "provisioning.server_tasks",
    "provisioning.secret_tasks",
    "provisioning.upgrade_tasks",
    "provisioning.stack_tasks",
    "provisioning.doctor_tasks",
    "provisioning.model_tasks",
    "provisioning.backup_tasks",
    "provisioning.auth_tasks",
)


def collection() -> Collection:
    ns = Collection()
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, Task):
                ns.add_task(value)
    return ns
