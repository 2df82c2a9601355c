"""What a run hands its trackers beyond Lightning's live metrics: the resolved config as
hyperparameters, the ``results.json`` record and the saved PEFT adapter.

Lightning's loggers do the writing (``log_hyperparams``, ``log_metrics``, their ``experiment``);
this is the glue that says what goes where. Rank zero only: the callbacks call it there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

RESULTS_PREFIX = "results/"  # the record's numbers, apart from the live metrics of the same name
MLFLOW_TAG_LIMIT = 5000  # MLflow refuses tag values over 8000 characters


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``; lists and other values stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def hyperparameters(config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The config as tracker hyperparameters: nested keys joined by ``/`` (a list of classes by index,
    ``trainer/logger/0/class_path``), other lists, empty values and None as JSON text, and every
    character MLflow refuses in a name (a rank_pattern key may be a regex) as ``_``."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in flatten(config).items():
        name = re.sub(r"[^\w\-./ ]", "_", key)
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            items = {str(index): item for index, item in enumerate(value)}
            flat.update({f"{name}/{k}": v for k, v in hyperparameters(items).items()})
        elif isinstance(value, (str, int, float, bool)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def publish_results(loggers: Iterable[Logger], record: dict[str, Any], record_path: Path, step: int) -> None:
    """The run config as hyperparameters and the record's fields, in every tracker configured."""
    config = record.get("config") or {}
    fields = {k: v for k, v in flatten(record).items() if not k.startswith("config/")}
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.config.update(config, allow_val_change=True)
            run.summary.update(fields)
        elif isinstance(logger, MLFlowLogger):
            _mlflow_results(logger, config, fields, record_path, step)
        elif isinstance(logger, TensorBoardLogger):
            _tensorboard_results(logger, config, fields, record, step)


def publish_adapter(loggers: Iterable[Logger], directory: Path, step: int) -> None:
    """The saved adapter folder as an artifact: W&B and MLflow store it; TensorBoard has no artifact
    store, so its run gets the folder's path as text."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            run = logger.experiment
            artifact = wandb.Artifact(name=f"adapter-{run.id}", type="model")
            artifact.add_dir(str(directory))
            run.log_artifact(artifact)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifacts(logger.run_id, str(directory), "adapter")
        elif isinstance(logger, TensorBoardLogger):
            text = f"PEFT adapter saved at `{directory.resolve()}` (TensorBoard stores no artifacts)"
            logger.experiment.add_text("adapter", text, step)


def _numbers_and_texts(fields: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    numbers = {
        RESULTS_PREFIX + k: float(v)
        for k, v in fields.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    texts = {
        RESULTS_PREFIX + k: v if isinstance(v, str) else json.dumps(v)
        for k, v in fields.items()
        if RESULTS_PREFIX + k not in numbers
    }
    return numbers, texts


def _mlflow_results(
    logger: MLFlowLogger, config: dict[str, Any], fields: dict[str, Any], record_path: Path, step: int
) -> None:
    from mlflow.entities import RunTag

    logger.log_hyperparams(hyperparameters(config))  # Lightning cuts each value at 250 characters
    numbers, texts = _numbers_and_texts(fields)
    logger.log_metrics(numbers, step)
    tags = [RunTag(k, v[:MLFLOW_TAG_LIMIT]) for k, v in texts.items()]
    logger.experiment.log_batch(logger.run_id, tags=tags)
    logger.experiment.log_artifact(logger.run_id, str(record_path))  # the whole record, config uncut


def _tensorboard_results(
    logger: TensorBoardLogger,
    config: dict[str, Any],
    fields: dict[str, Any],
    record: dict[str, Any],
    step: int,
) -> None:
    numbers, _ = _numbers_and_texts(fields)
    # One hparams entry per run, config and results together: TensorBoard's HParams dashboard
    # compares runs by them (the yaml turns Lightning's placeholder hp_metric off).
    logger.log_hyperparams(hyperparameters(config), metrics=numbers, step=step)
    indented = "\n".join("    " + line for line in json.dumps(record, indent=2).splitlines())
    logger.experiment.add_text("results.json", indented, step)  # a Markdown code block
