"""Building lit_lora objects for tests the way the CLI would, without the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from lit_lora.adapters import LoraSpec, Quantization
from lit_lora.data import SST2DataModule
from lit_lora.methods import PeftMethod
from lit_lora.models import SequenceClassifier


def classifier(model: Path, adapter: PeftMethod | None = None, **kwargs: Any) -> SequenceClassifier:
    kwargs.setdefault("learning_rate", 1e-2)
    kwargs.setdefault("warmup_ratio", 0.0)
    return SequenceClassifier(str(model), adapter=adapter or LoraSpec(r=4, alpha=8, dropout=0.0), **kwargs)


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
