"""VeRA (Kopiczko et al., 2024): frozen random projections shared by all layers, trained scaling vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft import PeftConfig, TaskType, VeraConfig

from lit_lora.core.ranges import DropoutRate, FiniteFloat, PositiveInt, Seed
from lit_lora.methods.base import PeftMethod


@dataclass
class VeraSpec(PeftMethod):
    """Vector-based random matrix adaptation: per layer only a rank-sized and an output-sized vector train."""

    r: PositiveInt = 256
    """Rank of the shared random projections; cheap, since only r + out parameters train per layer."""
    d_initial: FiniteFloat = 0.1
    """Initial value of the rank-sized scaling vector (the output-sized one starts at zero)."""
    dropout: DropoutRate = 0.0
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Module name suffixes to adapt; None uses PEFT's default for the architecture."""
    projection_seed: Seed = 0
    """Seed of the shared random projections (PEFT's projection_prng_key); saved with the adapter."""

    method: ClassVar[str] = "vera"
    label: ClassVar[str] = "VeRA"

    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        return VeraConfig(
            task_type=task_type,
            r=self.r,
            d_initial=self.d_initial,
            vera_dropout=self.dropout,
            target_modules=self.target_modules,
            projection_prng_key=self.projection_seed,
            save_projection=True,  # the export then reloads exactly, whatever PEFT's generator does
            modules_to_save=modules_to_save or None,
        )

    @classmethod
    def recognises(cls, config: PeftConfig) -> bool:
        return config.peft_type.value == "VERA"

    @classmethod
    def describe_config(cls, config: PeftConfig) -> dict[str, Any]:
        return {"ranks": {"r": config.r}}
