"""One of several processes started together on one new MLflow store (``python
tests/helpers/mlflow_probe.py BARRIER_DIR COUNT NAME``, run in the folder the store is relative to): it
makes the store as the CLI does for ``configs/extras/mlflow.yaml``, then does what Lightning's
``MLFlowLogger`` does first (a client on the store, the experiment by name, a run). Run as a file, not
with ``-m``: neither Lightning nor tests.helpers' builders are imported, so it starts in seconds."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from lit_lora.runtime.mlflow_store import create_mlflow_store

REPO = Path(__file__).resolve().parents[2]


def main(barrier: Path, count: int, name: str) -> None:
    (entry,) = yaml.safe_load((REPO / "configs" / "extras" / "mlflow.yaml").read_text())["trainer"]["logger"]
    args = entry["init_args"]
    (barrier / name).touch()  # imports done: wait for the others, then all go at once
    while len(list(barrier.iterdir())) < count:
        time.sleep(0.01)
    create_mlflow_store(args["tracking_uri"], args["experiment_name"], args["artifact_location"])
    client = MlflowClient(args["tracking_uri"])
    experiment = client.get_experiment_by_name(args["experiment_name"])
    run = client.create_run(experiment.experiment_id, run_name=name)
    client.log_metric(run.info.run_id, "probe", 1.0)
    client.set_terminated(run.info.run_id)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
