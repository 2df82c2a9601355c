"""Fixed-rank LoRA (Hu et al., 2021); variants that only add LoraConfig options build on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from peft import LoraConfig, PeftConfig, TaskType

from lit_lora.core.ranges import DropoutRate, PositiveFloat, PositiveInt
from lit_lora.methods.base import PeftMethod


@dataclass
class LoraSpec(PeftMethod):
    """Fixed-rank LoRA (Hu et al., 2021)."""

    r: PositiveInt = 8
    """Rank of every low-rank update unless ``rank_pattern`` says otherwise."""
    alpha: PositiveFloat = 16.0
    """Scaling numerator: updates are scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: DropoutRate = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Module name suffixes to adapt; None uses PEFT's default for the architecture."""
    rank_pattern: dict[str, PositiveInt] = field(default_factory=dict)
    """Per-module ranks, a name suffix or regex mapped to a rank: {'attention.self.query': 6}."""
    alpha_pattern: dict[str, PositiveFloat] = field(default_factory=dict)
    """Per-module alphas, keyed like ``rank_pattern``."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases to train besides the adapter."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski, 2023)."""

    method: ClassVar[str] = "lora"
    label: ClassVar[str] = "LoRA"

    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        return LoraConfig(
            task_type=task_type,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            rank_pattern=dict(self.rank_pattern),
            alpha_pattern=dict(self.alpha_pattern),
            bias=self.bias,
            use_rslora=self.use_rslora,
            modules_to_save=modules_to_save or None,
            **self.lora_options(),
        )

    def lora_options(self) -> dict[str, Any]:
        """Further LoraConfig arguments of a LoRA variant (DoRA's ``use_dora``, PiSSA's initialisation)."""
        return {}

    @classmethod
    def recognises(cls, config: PeftConfig) -> bool:
        # Saved PiSSA/OLoRA adapters are exported as plain LoRA, so only an unexported one says otherwise.
        init = getattr(config, "init_lora_weights", True)
        return config.peft_type.value == "LORA" and not config.use_dora and init in (True, False, "gaussian")

    @classmethod
    def describe_config(cls, config: PeftConfig) -> dict[str, Any]:
        return {"ranks": {"r": config.r, "rank_pattern": dict(config.rank_pattern or {})}}
