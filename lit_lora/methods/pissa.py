"""PiSSA (Meng et al., 2024): LoRA started from the principal singular vectors of each weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from peft import PeftConfig, PeftModel

from lit_lora.errors import LitLoraError
from lit_lora.methods._initial_adapter import ConvertedOnExport
from lit_lora.methods.base import AdapterHooks
from lit_lora.methods.lora import LoraSpec

if TYPE_CHECKING:
    from lit_lora.core.quantization import Quantization


@dataclass
class PissaSpec(LoraSpec):
    """LoRA's fields with PEFT's ``init_lora_weights="pissa"`` (full SVD: deterministic, so a resumed run
    rebuilds the same residual base). Exported as a plain LoRA adapter of rank 2r for the unchanged base."""

    method: ClassVar[str] = "pissa"
    label: ClassVar[str] = "PiSSA"
    # Its export converts against the initial adapter, which PEFT loads into the (sharded) model.
    supports_fsdp: ClassVar[bool] = False

    def lora_options(self) -> dict[str, Any]:
        return {"init_lora_weights": "pissa"}

    def check_quantization(self, quantization: Quantization) -> None:
        raise LitLoraError(
            f"model.adapter=PissaSpec cannot start from a model.quantization.mode={quantization.mode} base: "
            "PEFT computes PiSSA's SVD from full-precision weights; use model.quantization.mode=none"
        )

    def hooks(self, model: PeftModel) -> AdapterHooks:
        return ConvertedOnExport(model, type(self))

    @classmethod
    def recognises(cls, config: PeftConfig) -> bool:
        return config.peft_type.value == "LORA" and str(config.init_lora_weights).startswith("pissa")
