"""DoRA (Liu et al., 2024): LoRA on the direction of each weight plus a trained magnitude per output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft import PeftConfig

from lit_lora.methods.lora import LoraSpec


@dataclass
class DoraSpec(LoraSpec):
    """Weight-decomposed LoRA: LoRA's fields, PEFT's ``use_dora``; trains on 4-bit and 8-bit bases too."""

    method: ClassVar[str] = "dora"
    label: ClassVar[str] = "DoRA"

    def lora_options(self) -> dict[str, Any]:
        return {"use_dora": True}

    @classmethod
    def recognises(cls, config: PeftConfig) -> bool:
        return config.peft_type.value == "LORA" and bool(config.use_dora)
