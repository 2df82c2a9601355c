"""Loggers: CSV always on; W&B goes offline by itself and receives the config and results."""

from __future__ import annotations

import json

import yaml

from lit_lora.loggers import wandb_reachable
from tests.conftest import REPO
from tests.test_cli import run_cli


def test_wandb_is_unreachable_without_key_or_server(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    assert not wandb_reachable()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert not wandb_reachable(timeout_s=0.5)


def test_fit_with_wandb_and_no_key_leaves_an_offline_run(tiny_bert, tiny_sst2, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key either
    extras = yaml.safe_load((REPO / "configs" / "extras" / "wandb.yaml").read_text())
    extras["trainer"]["logger"][0]["init_args"]["save_dir"] = str(tmp_path / "wb")
    (tmp_path / "wandb.yaml").write_text(yaml.safe_dump(extras))
    result = run_cli(
        "fit", "--config", "configs/sst2_lora.yaml", "--config", str(tmp_path / "wandb.yaml"),
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "out" / "lightning_logs" / "version_0"
    assert (run / "metrics.csv").is_file() and json.loads((run / "results.json").read_text())[
        "stage"
    ] == "fit"
    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    (log,) = offline.glob("*.wandb")
    content = log.read_bytes()
    for key in (b"metrics/val/acc", b"parameters/trainable", b"peak_memory_mb", b"model_name_or_path"):
        assert key in content, key  # summary and config reached the W&B run
