"""configs/qlora_sft_deepspeed.yaml holds the seed's QLoRA SFT recipe, value by value, and runs offline."""

from __future__ import annotations

import json

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_lora import LoraSpec
from lit_lora.callbacks import AdapterExport, PredictionsWriter, ResultsRecorder
from lit_lora.cli import build_cli
from lit_lora.data import ChatSFTDataModule
from lit_lora.data._mixing import quotas
from lit_lora.models import CausalLM
from tests.helpers import REPO

CONFIG = str(REPO / "configs" / "qlora_sft_deepspeed.yaml")


@pytest.fixture(scope="module")
def recipe():
    return build_cli(["--config", CONFIG], run=False)


def only(callbacks, kind):
    found = [c for c in callbacks if isinstance(c, kind)]
    assert len(found) == 1, callbacks
    return found[0]


def test_model_adapter_and_quantisation(recipe):
    model = recipe.model
    assert isinstance(model, CausalLM) and model.model_name_or_path == "meta-llama/Llama-3.2-1B-Instruct"
    assert isinstance(model.adapter, LoraSpec)
    assert (model.adapter.r, model.adapter.alpha, model.adapter.dropout) == (64, 16.0, 0.1)
    assert model.adapter.target_modules is None  # CausalLM then adapts every projection
    assert (model.quantization.mode, model.quantization.double_quant) == ("nf4", True)
    assert model.gradient_checkpointing is True


def test_optimisation(recipe):
    model, trainer = recipe.model, recipe.trainer
    assert (model.learning_rate, model.weight_decay, model.warmup_ratio) == (6e-5, 0.0, 0.03)
    assert trainer.gradient_clip_val == 1.0
    assert recipe.datamodule.batch_size == 4 and trainer.accumulate_grad_batches == 2
    assert trainer.max_epochs == 1
    assert trainer.precision == "bf16-mixed"


def test_every_500_optimizer_steps_validation_and_checkpoint(recipe):
    trainer = recipe.trainer
    # Lightning counts val_check_interval in batches, checkpoints and logging in optimizer steps.
    assert trainer.val_check_interval == 500 * trainer.accumulate_grad_batches
    assert trainer.log_every_n_steps == 25
    checkpoint = only(trainer.callbacks, ModelCheckpoint)
    assert trainer.checkpoint_callback is checkpoint  # replaces Lightning's default one
    assert checkpoint._every_n_train_steps == 500 and checkpoint.save_top_k == -1
    stopping = only(trainer.callbacks, EarlyStopping)
    assert (stopping.monitor, stopping.mode, stopping.patience) == ("val/loss", "min", 3)
    assert abs(stopping.min_delta) == 0.05
    for default in (ResultsRecorder, AdapterExport, PredictionsWriter):  # lit_lora's stay on
        only(trainer.callbacks, default)


def test_proportional_mixing_67_100_100(recipe):
    data = recipe.datamodule
    assert isinstance(data, ChatSFTDataModule) and data.mixing == "proportional"
    assert [s.weight for s in data.sources] == [0.67, 1.0, 1.0]
    assert quotas([s.weight for s in data.sources], 267) == [67, 100, 100]
    assert all((REPO / s.path).is_file() for s in data.sources)  # offline placeholders


def test_recipe_runs_offline_on_the_tiny_decoder(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the placeholder sources are repo-relative paths
    build_cli(
        [
            "fit", "--config", CONFIG, "--model.model_name_or_path", str(tiny_llama),
            "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.val_check_interval", "4",
            "--data.max_length", "1024",  # the tiny decoder has 1,024 positions
            "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        ]
    )  # fmt: skip
    run = tmp_path / "lightning_logs" / "version_0"
    record = json.loads((run / "results.json").read_text())
    assert record["config_name"] == "qlora_sft_deepspeed" and record["global_steps"] == 2
    assert (record["quantization"], record["double_quant"], record["ranks"]["r"]) == ("nf4", True, 64)
    projections = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert record["target_modules"] == projections  # target_modules: null took every projection
    assert "val/loss" in record["metrics"] and (run / "adapter" / "adapter_config.json").is_file()
