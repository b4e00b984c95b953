"""What both clouds' managed PostgreSQL share: the database the kit creates and its URI.

Standard library only, so tests and tools can build and read the URI without Pulumi.
"""

from __future__ import annotations

from urllib.parse import quote

DB_NAME = "mlflow"
DB_USER = "mlflow"
DB_PORT = 5432


def backend_store_uri(password: str, host: str, port: int = DB_PORT) -> str:
    """The SQLAlchemy URI MLflow's ``--backend-store-uri`` takes, password URL-encoded."""
    return (
        f"postgresql+psycopg2://{DB_USER}:{quote(password, safe='')}@{host}:{port}/{DB_NAME}"
        "?sslmode=require"
    )
