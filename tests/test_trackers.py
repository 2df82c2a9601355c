"""MLflow and TensorBoard, stacked on a run config as `configs/extras/*.yaml`: each store, read back, holds
the CSV logger's metrics, the resolved config as hyperparameters, the results.json fields and (MLflow)
the adapter; an unwritable store is refused in one line before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_lora.cli import build_cli
from lit_lora.errors import LitLoraError
from lit_lora.runtime.loggers import ClaimedTensorBoardLogger
from lit_lora.runtime.tracking import RESULTS_PREFIX, flatten, hyperparameters
from tests.helpers import REPO
from tests.helpers.trackers import csv_series, fit_with_extra, record


def live_and_results(series: dict[str, list]) -> tuple[dict[str, list], dict[str, list]]:
    live = {k: v for k, v in series.items() if not k.startswith(RESULTS_PREFIX)}
    return live, {k: v for k, v in series.items() if k.startswith(RESULTS_PREFIX)}


def numeric_fields(run_record: dict) -> dict[str, float]:
    return {
        RESULTS_PREFIX + k: float(v)
        for k, v in flatten(run_record).items()
        if not k.startswith("config/") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


# ---- MLflow -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_run(tiny_bert, tiny_sst2, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    workdir = tmp_path_factory.mktemp("mlflow")
    run = fit_with_extra("mlflow.yaml", tiny_bert, tiny_sst2, workdir)
    client = MlflowClient(f"sqlite:///{workdir}/runs/mlflow.db")  # the extra's store, from its folder
    experiment = client.get_experiment_by_name("lit_lora")
    (tracked,) = client.search_runs([experiment.experiment_id])
    return run, client, tracked


def test_mlflow_metrics_equal_the_csv_logger(mlflow_run):
    run, client, tracked = mlflow_run
    assert tracked.info.status == "FINISHED"
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(tracked.info.run_id, key)]
        for key in tracked.data.metrics
    }
    live, results = live_and_results(history)
    expected = csv_series(run)
    assert {"params/trainable", "train/loss", "val/acc", "epoch"} <= set(expected)
    assert {k: sorted(v) for k, v in live.items()} == {k: sorted(v) for k, v in expected.items()}
    # The record's numbers once, at the last step; its texts as tags.
    fields = record(run)
    steps = fields["global_steps"]
    assert results == {k: [(steps, v)] for k, v in numeric_fields(fields).items()}
    assert tracked.data.tags["results/config_name"] == "sst2_lora+mlflow"  # the experiment and the extra
    assert tracked.data.tags["results/status"] == "completed"
    assert tracked.data.tags["results/target_modules"] == '["query", "value"]'


def test_mlflow_params_are_the_resolved_config(mlflow_run):
    run, _, tracked = mlflow_run
    params = tracked.data.params
    assert params == {k: str(v) for k, v in hyperparameters(record(run)["config"]).items()}
    assert params["model/init_args/adapter/init_args/r"] == "8"
    assert params["model/init_args/adapter/init_args/target_modules"] == '["query", "value"]'
    assert params["trainer/logger/0/class_path"] == "lightning.pytorch.loggers.MLFlowLogger"
    assert params["trainer/max_epochs"] == "1" and params["trainer/max_steps"] == "-1"


def test_mlflow_holds_the_adapter_and_the_record(mlflow_run, tmp_path):
    run, client, tracked = mlflow_run
    run_id = tracked.info.run_id
    assert {a.path for a in client.list_artifacts(run_id)} == {"adapter", "results.json"}
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "results.json"):
        copy = Path(client.download_artifacts(run_id, name, str(tmp_path)))
        assert copy.read_bytes() == (run / name).read_bytes(), name


# ---- TensorBoard --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tensorboard_run(tiny_bert, tiny_sst2, tmp_path_factory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = tmp_path_factory.mktemp("tensorboard")
    run = fit_with_extra("tensorboard.yaml", tiny_bert, tiny_sst2, workdir)
    (log_dir,) = (workdir / "runs" / "tensorboard").iterdir()
    assert log_dir.name == "version_0"
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return run, events


def test_tensorboard_scalars_equal_the_csv_logger(tensorboard_run):
    run, events = tensorboard_run
    series = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    live, results = live_and_results(series)
    expected = csv_series(run)
    assert set(live) == set(expected)
    for key, points in expected.items():  # TensorBoard keeps float32
        assert sorted(live[key]) == [(s, pytest.approx(v, rel=1e-6)) for s, v in sorted(points)], key
    fields = record(run)
    numbers = numeric_fields(fields)
    assert set(results) == set(numbers)
    for key, value in numbers.items():
        assert results[key] == [(fields["global_steps"], pytest.approx(value, rel=1e-6))], key


def test_tensorboard_hparams_are_the_resolved_config(tensorboard_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, events = tensorboard_run
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert set(hparams) == set(hyperparameters(record(run)["config"]))
    assert hparams["model/init_args/adapter/init_args/r"].number_value == 8
    assert hparams["model/init_args/adapter/init_args/target_modules"].string_value == '["query", "value"]'
    assert hparams["trainer/logger/0/init_args/name"].string_value == "tensorboard"


def test_tensorboard_holds_the_record_and_the_adapter_path(tensorboard_run):
    run, events = tensorboard_run

    def text(tag: str) -> str:
        (event,) = events.Tensors(f"{tag}/text_summary")
        return event.tensor_proto.string_val[0].decode()

    assert json.loads(text("results.json")) == record(run)  # an indented (Markdown code) block
    assert text("adapter") == f"PEFT adapter saved at `{run / 'adapter'}` (TensorBoard stores no artifacts)"


def test_tensorboard_runs_started_together_get_their_own_version_folders(tmp_path):
    # Both pick their folder before either writes, as two processes started together do.
    first, second = (ClaimedTensorBoardLogger(save_dir=tmp_path, name="tensorboard") for _ in range(2))
    assert (first.log_dir, second.log_dir) == tuple(
        str(tmp_path / "tensorboard" / f"version_{v}") for v in (0, 1)
    )


def test_hyperparameters_are_flat_names_mlflow_accepts():
    config = {
        "model": {"rank_pattern": {"^query$": 4}, "target_modules": ["query"], "path": None, "kw": {}},
        "trainer": {"logger": [{"class_path": "a.B", "init_args": {"x": 1.5}}], "callbacks": []},
    }
    assert hyperparameters(config) == {
        "model/rank_pattern/_query_": 4,
        "model/target_modules": '["query"]',
        "model/path": "null",
        "model/kw": "{}",
        "trainer/logger/0/class_path": "a.B",
        "trainer/logger/0/init_args/x": 1.5,
        "trainer/callbacks": "[]",
    }


def test_runs_started_together_share_a_new_mlflow_store(tmp_path):
    # Without lit_lora's lock MLflow's own table creation fails in all but one (alembic or sqlite errors).
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "tests/helpers/mlflow_probe.py"), str(barrier), "2"]
    probes = [
        subprocess.Popen([*command, name], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        for name in ("first", "second")
    ]
    errors = [probe.communicate(timeout=300)[1] for probe in probes]
    assert [probe.returncode for probe in probes] == [0, 0], errors
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "lit_lora"]
    runs = client.search_runs([client.get_experiment_by_name("lit_lora").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["first", "second"]


# ---- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "argument"),
    [("mlflow.yaml", "tracking_uri"), ("tensorboard.yaml", "save_dir")],
)
def test_an_unwritable_store_is_refused_in_one_line(extra, argument, tmp_path, monkeypatch):
    (tmp_path / "runs").write_text("")  # a file where the store's folder should be
    monkeypatch.chdir(tmp_path)
    args = [
        "--config",
        str(REPO / "configs/sst2_lora.yaml"),
        "--config",
        str(REPO / "configs/extras" / extra),
    ]
    with pytest.raises(LitLoraError) as refusal:
        build_cli([*args, "--trainer.default_root_dir", str(tmp_path / "out")], run=False)
    assert str(refusal.value).startswith(f"trainer.logger[0].init_args.{argument}=")
    assert str(refusal.value).endswith(": cannot write there (File exists)")
