"""GSM8K from the command line on the tiny decoder: fit, test with exact match, predict to JSONL."""

from __future__ import annotations

import json

import pytest
import torch

from lit_lora.cli import build_cli
from lit_lora.models import CausalLM
from tests.helpers import GSM8K_ROWS, REPO

# Hand-written replies to GSM8K_ROWS (references 8, 15, 1000): the first answers right and then makes up
# a next question (strict right, flexible wrong), the others have no "####" (strict wrong, flexible right).
REPLIES = {
    "Tom has": "3 + 5 = 8\n#### 8\n\nQuestion: Tom has 2 more apples.\nAnswer: 2 + 2 = 4\n#### 4",
    "A hat": "2 * 7.50 = $15.00, so $15.",  # "15.00" is not "15": the last number is "$15."
    "Sue had": "She has 1,000 beads left.",
}


def scripted_generate(
    self: CausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int | None = None
) -> list[str]:
    prompts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
    return [next(reply for start, reply in REPLIES.items() if start in prompt) for prompt in prompts]


def test_gsm8k_fit_test_and_predict_write_their_records(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(CausalLM, "generate", scripted_generate)
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
    assert {"train/loss", "val/loss", "val/ppl"} <= set(fitted["metrics"])
    # Validation holds out rows of train: whichever they are, strict + flexible = 1 for each of them.
    val = fitted["metrics"]["val/exact_match"], fitted["metrics"]["val/exact_match_flexible"]
    assert sum(val) == pytest.approx(1.0)
    assert fitted["config_name"] == "gsm8k_gpt2" and fitted["target_modules"][0] == "down_proj"
    assert fitted["train_batches"] == "packed"  # data.packing auto, and the tiny llama runs sdpa

    adapter = ["--model.adapter_path", str(run / "adapter")]
    build_cli(["test", *common, *adapter, "--trainer.default_root_dir", str(tmp_path / "test")])
    tested = json.loads((tmp_path / "test" / "lightning_logs" / "version_0" / "results.json").read_text())
    assert tested["test_samples"] == 3
    assert tested["metrics"]["test/exact_match"] == pytest.approx(1 / 3)  # strict: the first "####"
    assert tested["metrics"]["test/exact_match_flexible"] == pytest.approx(2 / 3)  # the last number
    # Pinned for seed_everything 42 on torch 2.13 CPU, packed batches (the replies are scripted; the
    # losses are not). Padded batches gave val/loss 6.40857: the same to 2e-5.
    assert fitted["metrics"]["val/loss"] == pytest.approx(6.40844, abs=1e-4)
    assert tested["metrics"]["test/loss"] == pytest.approx(6.42085, abs=1e-4)
    assert tested["metrics"]["test/ppl"] == pytest.approx(614.524, rel=1e-4)  # exp(test/loss)

    build_cli(["predict", *common, *adapter, "--trainer.default_root_dir", str(tmp_path / "predict")])
    lines = (
        (tmp_path / "predict" / "lightning_logs" / "version_0" / "predictions.jsonl").read_text().splitlines()
    )
    rows = [json.loads(line) for line in lines]
    assert [r["reference"] for r in rows] == ["8", "15", "1000"]  # input order
    assert [(r["answer"], r["correct"]) for r in rows] == [("8", True), (None, False), (None, False)]
    assert [(r["answer_flexible"], r["correct_flexible"]) for r in rows] == [
        ("4", False),
        ("$15.", True),
        ("1,000", True),
    ]
