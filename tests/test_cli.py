"""The command line as a user meets it: shipped configs, one-line errors, a real fit and test."""

from __future__ import annotations

import json

import pytest
import yaml
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from lit_lora import AdaLoraSpec
from lit_lora.cli import build_cli
from lit_lora.methods import PeftMethod
from tests.helpers import REPO
from tests.helpers.cli import run_cli

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_instantiates(config):
    cli = build_cli(["--config", str(config)], run=False)
    assert isinstance(cli.model.adapter, PeftMethod)
    assert cli.datamodule.tokenizer_name == cli.model.model_name_or_path


def test_qlora_config_is_the_lora_config_plus_quantisation():
    lora, qlora = (
        yaml.safe_load((REPO / "configs" / f"{n}.yaml").read_text()) for n in ("sst2_lora", "sst2_qlora")
    )
    quantization = qlora["model"]["init_args"].pop("quantization")
    assert quantization == {"mode": "nf4", "double_quant": True}
    lora["trainer"].pop("default_root_dir"), qlora["trainer"].pop("default_root_dir")
    assert lora == qlora


def test_bad_input_ends_the_process_with_one_line_and_status_2():
    # Every case of the bad-input matrix runs in-process in test_bad_input.py; this one goes through
    # a real `python -m lit_lora` process for its exit status.
    result = run_cli("fit", "--config", "configs/sst2_lora.yaml", "--model.adapter.rr", "3")
    errors = [line for line in result.stderr.splitlines() if line.startswith("lit_lora: error:")]
    assert result.returncode == 2
    assert len(errors) == 1 and "model.adapter.rr: unknown key" in errors[0], result.stderr[-2000:]


@pytest.mark.slow  # fit, test and predict processes
def test_fit_then_test_from_the_command_line(tiny_bert, tiny_sst2, tmp_path):
    common = ["--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2)]
    fit = run_cli(
        "fit", "--config", "configs/sst2_lora.yaml", *common,
        "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "fit"),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "fit" / "lightning_logs" / "version_0"
    record = json.loads((run / "results.json").read_text())
    assert record["stage"] == "fit" and record["config_name"] == "sst2_lora" and record["method"] == "lora"
    assert {"val/acc", "val/f1", "train/loss"} <= set(record["metrics"])
    # LoRA r=8 on query and value (4 x 8 x (32 + 32)) + classifier (2 x 32 + 2) + pooler (32 x 32 + 32).
    assert record["parameters"]["trainable"] == 2048 + 66 + 1056 and record["train_samples"] == 96
    assert record["metrics"]["val/acc"] == 15 / 32
    assert record["metrics"]["train/loss"] == pytest.approx(0.69266, abs=1e-4)
    assert record["samples_per_s"] > 0 and record["peak_memory_mb"] > 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]["data_dir"] == str(
        tiny_sst2
    )
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, run / "adapter"), PeftModel)

    test = run_cli(
        "test", "--config", "configs/sst2_lora.yaml", *common, "--data.test_split", "test",
        "--model.adapter_path", str(run / "adapter"), "--trainer.default_root_dir", str(tmp_path / "test"),
    )  # fmt: skip
    assert test.returncode == 0, test.stderr[-3000:]
    tested = json.loads((tmp_path / "test" / "lightning_logs" / "version_0" / "results.json").read_text())
    assert tested["stage"] == "test" and tested["test_samples"] == 32
    # Pinned for seed_everything 42 on torch 2.13 CPU: one epoch leaves the tiny model near chance.
    assert tested["metrics"]["test/acc"] == 12 / 32
    assert tested["metrics"]["test/loss"] == pytest.approx(0.69598, abs=1e-4)
    assert tested["metrics"]["test/f1"] == 0.0  # no positive predictions yet

    predict = run_cli(
        "predict", "--config", "configs/sst2_lora.yaml", *common, "--data.test_split", "test",
        "--model.adapter_path", str(run / "adapter"), "--trainer.default_root_dir", str(tmp_path / "predict"),
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-3000:]
    lines = (
        (tmp_path / "predict" / "lightning_logs" / "version_0" / "predictions.jsonl").read_text().splitlines()
    )
    assert len(lines) == 32 and {"label", "label_name", "confidence"} <= set(json.loads(lines[0]))


def test_overriding_a_field_both_specs_share_keeps_the_configured_method():
    # jsonargparse used to re-pick the first spec accepting the value: AdaLoRA silently became LoRA.
    cli = build_cli(["--config", "configs/sst2_adalora.yaml", "--model.adapter.dropout", "0"], run=False)
    assert isinstance(cli.model.adapter, AdaLoraSpec) and cli.model.adapter.dropout == 0.0
    assert cli.model.adapter.init_r == 12  # the config's other fields stay
