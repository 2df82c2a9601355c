"""LoRA+ (Hayou et al., 2024): plain LoRA adapters whose B matrices learn ``lr_ratio`` times faster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft import PeftConfig, PeftModel
from peft.optimizers import create_loraplus_optimizer

from lit_lora.core.ranges import NonNegativeFloat, PositiveFloat
from lit_lora.methods.lora import LoraSpec


@dataclass
class LoraPlusSpec(LoraSpec):
    """LoRA with PEFT's LoRA+ parameter groups; whatever optimizer the module uses receives them."""

    lr_ratio: PositiveFloat = 16.0
    """Learning rate of B (and of 1-D parameters such as biases) over that of A: PEFT's loraplus_lr_ratio."""
    lr_embedding: NonNegativeFloat = 1e-6
    """Learning rate of adapters on embedding layers."""

    method: ClassVar[str] = "loraplus"
    label: ClassVar[str] = "LoRA+"

    def param_groups(self, model: PeftModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        # PEFT builds the groups and hands them to an optimizer class; taking them instead lets the
        # module's own (injectable) optimizer receive them.
        groups = create_loraplus_optimizer(
            model,
            _groups_only,  # type: ignore[arg-type]
            lr=lr,
            loraplus_lr_ratio=self.lr_ratio,
            loraplus_lr_embedding=self.lr_embedding,
            loraplus_weight_decay=weight_decay,
        )
        return [group for group in groups if group["params"]]

    @classmethod
    def recognises(cls, config: PeftConfig) -> bool:
        return False  # a saved LoRA+ adapter is a plain LoRA adapter: only the optimizer differed


def _groups_only(groups: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    return groups
