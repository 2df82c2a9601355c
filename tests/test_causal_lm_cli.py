"""GSM8K from the command line on the tiny decoder: fit, test with exact match, predict to JSONL."""

from __future__ import annotations

import json

from lit_lora.cli import build_cli
from tests.conftest import REPO
from tests.test_causal_lm import GSM8K_ROWS


def test_gsm8k_fit_test_and_predict_write_their_records(tiny_llama, tmp_path):
    data = tmp_path / "gsm8k"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    common = [
        "--config", str(REPO / "configs" / "gsm8k_gpt2.yaml"), "--model.model_name_or_path", str(tiny_llama),
        "--data.data_dir", str(data), "--model.max_new_tokens", "4", "--trainer.enable_progress_bar", "false",
        "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    build_cli(
        ["fit", *common, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "fit")]
    )
    run = tmp_path / "fit" / "lightning_logs" / "version_0"
    fitted = json.loads((run / "results.json").read_text())
    assert {"train/loss", "val/loss", "val/ppl", "val/exact_match"} <= set(fitted["metrics"])
    assert fitted["config_name"] == "gsm8k_gpt2" and fitted["target_modules"][0] == "down_proj"

    adapter = ["--model.adapter_path", str(run / "adapter")]
    build_cli(["test", *common, *adapter, "--trainer.default_root_dir", str(tmp_path / "test")])
    tested = json.loads((tmp_path / "test" / "lightning_logs" / "version_0" / "results.json").read_text())
    assert tested["test_samples"] == 3 and 0.0 <= tested["metrics"]["test/exact_match"] <= 1.0
    assert tested["metrics"]["test/ppl"] > 1.0

    build_cli(["predict", *common, *adapter, "--trainer.default_root_dir", str(tmp_path / "predict")])
    lines = (
        (tmp_path / "predict" / "lightning_logs" / "version_0" / "predictions.jsonl").read_text().splitlines()
    )
    rows = [json.loads(line) for line in lines]
    assert [r["reference"] for r in rows] == ["8", "15", "1000"]  # input order
    assert all(set(r) == {"prompt", "generation", "answer", "reference", "correct"} for r in rows)
