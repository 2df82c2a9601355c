"""lit_lora: LoRA, QLoRA, AdaLoRA, DoRA, LoRA+, PiSSA, OLoRA and VeRA fine-tuning with Lightning and PEFT."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["AdaLoraSpec", "LitLoraError", "LoraSpec", "Quantization", "__version__"]

# Imported on first use: `lit_lora sweep` and `lit_lora report` should not pay for peft and torch.
_LAZY = {
    "AdaLoraSpec": "lit_lora.methods",
    "LoraSpec": "lit_lora.methods",
    "Quantization": "lit_lora.core.quantization",
    "LitLoraError": "lit_lora.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lit_lora' has no attribute {name!r}")
