"""A local MLflow store (``sqlite:///...``) made once by whichever run comes first.

MLflow creates a new SQLite store's tables (alembic migrations) and Lightning's ``MLFlowLogger`` the
experiment on first use, with no lock: runs or DDP ranks started together on a new store fail in all
but one ("duplicate column name", "Online migration expected to match one row"). Kept free of
Lightning so that it stays cheap to import.
"""

from __future__ import annotations

from pathlib import Path

from lit_lora.core.locks import locked

SQLITE = "sqlite:///"


def create_mlflow_store(tracking_uri: str, experiment_name: str, artifact_location: str | None) -> None:
    """Create the tables and the experiment of a local SQLite store, under a lock beside it; other
    stores (a server, MLflow's file store) are left to MLflow."""
    if not tracking_uri.startswith(SQLITE):
        return
    from mlflow.tracking import MlflowClient

    database = Path(tracking_uri.removeprefix(SQLITE))
    with locked(database.parent / f".{database.name}.lock"):
        client = MlflowClient(tracking_uri)  # creates or upgrades the tables
        if client.get_experiment_by_name(experiment_name) is None:
            client.create_experiment(experiment_name, artifact_location=artifact_location)
