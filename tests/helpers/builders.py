"""Building lit_lora objects for tests the way the CLI would, without the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from lit_lora.core.quantization import Quantization
from lit_lora.data import SST2DataModule
from lit_lora.methods import LoraSpec, PeftMethod
from lit_lora.models import CausalLM, SequenceClassifier

# The tiny BERT's shape (the `tiny_bert` fixture, and the bad-input table's own copy of it).
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 5 more. How many?", "answer": "3 + 5 = <<3+5=8>>8\n#### 8"},
    {"question": "A hat costs $7.50. What do 2 cost?", "answer": "2 * 7.50 = $15.00\n#### 15"},
    {"question": "Sue had 1,200 beads and used 200.", "answer": "1,200 - 200 = 1,000\n#### 1,000"},
]


def classifier(model: Path, adapter: PeftMethod | None = None, **kwargs: Any) -> SequenceClassifier:
    kwargs.setdefault("learning_rate", 1e-2)
    kwargs.setdefault("warmup_ratio", 0.0)
    return SequenceClassifier(str(model), adapter=adapter or LoraSpec(r=4, alpha=8, dropout=0.0), **kwargs)


def causal_lm(model: Path, **kwargs: Any) -> CausalLM:
    kwargs.setdefault("adapter", LoraSpec(r=4, alpha=8, dropout=0.0))
    kwargs.setdefault("learning_rate", 1e-2)
    kwargs.setdefault("warmup_ratio", 0.0)
    return CausalLM(str(model), **kwargs)


def sst2(model: Path, data: Path, **kwargs: Any) -> SST2DataModule:
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("max_length", 32)
    return SST2DataModule(tokenizer_name=str(model), data_dir=str(data), **kwargs)


def trainer(root: Path, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": str(root),
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
    }
    return L.Trainer(**{**defaults, **kwargs})


def quantized(mode: str = "nf4") -> Quantization:
    return Quantization(mode=mode)  # type: ignore[arg-type]
