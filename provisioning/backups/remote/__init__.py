"""Programs the kit installs on the VM next to the server (``/opt/mlflow/bin``).

They run with the server's own conda environment (its python, psycopg2, its storage
client) as transient units or services that read the server's EnvironmentFile, so
the database password and storage credentials reach them only through the
environment, never a command line. They are plain Python files, not templates:
the unit tests import them directly.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

#: File here -> where it goes on the VM (the scripts find kit_storage beside them).
PROGRAMS = {
    "kit_storage.py": "/opt/mlflow/bin/kit_storage.py",
    "mlflow_backup.py": "/opt/mlflow/bin/mlflow-backup",
    "mlflow_gc.py": "/opt/mlflow/bin/mlflow-gc",
    "mlflow_metrics.py": "/opt/mlflow/bin/mlflow-metrics",
}


def source(name: str) -> bytes:
    return (HERE / name).read_bytes()
