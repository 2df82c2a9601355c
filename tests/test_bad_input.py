"""The bad-input matrix (docs/bad-input.md): one line naming the key, file or value, exit status 2,
nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.bad_inputs import cases, error_lines, run_case
from tests.conftest import GSM8K_ROWS

# Built without the session fixtures so that `python -m tests.bad_inputs` can make them too.
_PLACEHOLDER = Path("/nonexistent")
CASES = cases(_PLACEHOLDER, _PLACEHOLDER, _PLACEHOLDER)


def make_fixtures(directory: Path, tokenizer_source: Path, shape: dict) -> tuple[Path, Path, Path]:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lit_lora.data.demo import write_demo_sentiment

    model = directory / "model"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **shape)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = write_demo_sentiment(directory / "data")
    gsm8k = directory / "gsm8k"
    gsm8k.mkdir()
    for split in ("train", "test"):
        (gsm8k / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return model, data, gsm8k


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_in_one_line_with_status_2_and_leaves_nothing(
    case, tiny_bert, tiny_sst2, gsm8k_dir, tmp_path
):
    (real,) = [c for c in cases(tiny_bert, tiny_sst2, gsm8k_dir) if c.name == case.name]
    status, stderr = run_case(real, tiny_bert, tiny_sst2, tmp_path)
    lines = error_lines(stderr)
    assert status == 2, stderr[-3000:]
    assert len(lines) == 1 and real.expected in lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    runs = tmp_path / "runs"
    left = [p for p in runs.rglob("*") if p.is_file()] if runs.is_dir() else []
    if real.name == "disk full while writing results":
        assert not any(p.name == "results.json" for p in left)  # atomic writes: nothing half-written
    else:
        assert left == [], left
