"""Shared fixtures: a tiny seeded BERT with a real WordPiece tokenizer, tiny SST-2-shaped data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import GSM8K_ROWS, SHARED_DATA, TINY, minilm_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm() -> Path:
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with seeded random weights and MiniLM's uncased WordPiece tokenizer.

    Dropout is off so that losses are reproducible across processes and resumed runs.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **TINY
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_sst2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SST-2-shaped tsv files: 96 train, 32 dev and 32 test rows of lit_lora's demo sentiment data."""
    from lit_lora.data.demo import write_demo_sentiment

    full = write_demo_sentiment(tmp_path_factory.mktemp("demo_full"))
    directory = tmp_path_factory.mktemp("tiny_sst2")
    for split, rows in {"train": 96, "dev": 32, "test": 32}.items():
        lines = (full / f"{split}.tsv").read_text().splitlines(keepends=True)[: rows + 1]
        (directory / f"{split}.tsv").write_text("".join(lines))
    return directory


@pytest.fixture(scope="session")
def shared_sst2() -> Path:
    path = SHARED_DATA / "sst2"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide seeded Llama with a byte-level BPE tokenizer trained on built-in text."""
    from lit_lora.tiny_decoder import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("tiny_llama"), "llama", seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny decoder with GPT-2's layer names (c_attn, c_proj, c_fc) and learned positions."""
    from lit_lora.tiny_decoder import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("tiny_gpt2"), "gpt2", seed=0)


@pytest.fixture(scope="session")
def gsm8k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GSM8K-shaped train.jsonl and test.jsonl with three questions."""
    directory = tmp_path_factory.mktemp("gsm8k")
    for split in ("train", "test"):
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return directory


@pytest.fixture(scope="session")
def tiny_squad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SQuAD v2 file (answerable and unanswerable questions, contexts longer than one window)."""
    from tests.helpers.squad import squad_json

    path = tmp_path_factory.mktemp("tiny_squad") / "dev-v2.0.json"
    path.write_text(json.dumps(squad_json()))
    return path


@pytest.fixture(scope="session")
def tiny_models(tiny_bert: Path, tiny_llama: Path) -> dict[str, Path]:
    """The tiny encoder and decoder by role, for tests that run every task module."""
    return {"bert": tiny_bert, "llama": tiny_llama}
