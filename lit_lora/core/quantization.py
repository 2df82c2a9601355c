"""Quantisation of the frozen base (the one place that knows bitsandbytes' API).

QLoRA is not a class: it is any method of :mod:`lit_lora.methods` plus a :class:`Quantization`
with a mode other than ``none``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lit_lora.errors import LitLoraError

QuantMode = Literal["none", "nf4", "fp4", "int8"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class Quantization:
    """Quantisation of the frozen base weights through bitsandbytes (QLoRA when mode is nf4)."""

    mode: QuantMode = "none"
    """none, nf4 or fp4 (4-bit), or int8 (LLM.int8())."""
    double_quant: bool = True
    """4-bit only: quantise the quantisation constants too (saves ~0.4 bit per weight)."""
    compute_dtype: DtypeName = "auto"
    """4-bit only: dtype of the de-quantised matmul; auto picks bfloat16 on CUDA, float32 elsewhere."""

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def to_bnb_config(self, skip_modules: list[str], device: torch.device, shardable: bool = False) -> Any:
        """A transformers ``BitsAndBytesConfig`` that keeps ``skip_modules`` (heads, pooler) unquantised.

        No skip modules (language models) leaves transformers' default, which keeps the output layer
        (``lm_head``) unquantised; an empty list would quantise it. ``shardable`` (FSDP2) stores the
        packed 4-bit weights in the compute dtype, the dtype of the other weights, so they shard with them.
        """
        from transformers import BitsAndBytesConfig

        if self.mode == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules or None)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.mode,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=self.resolved_compute_dtype(device),
            bnb_4bit_quant_storage=self.resolved_compute_dtype(device) if shardable else torch.uint8,
            llm_int8_skip_modules=skip_modules or None,
        )

    def resolved_compute_dtype(self, device: torch.device) -> torch.dtype:
        if self.compute_dtype != "auto":
            return getattr(torch, self.compute_dtype)
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    def check_supported(self, device: torch.device) -> None:
        """Fail with one line if bitsandbytes is missing or cannot run this mode on ``device``."""
        if not self.enabled:
            return
        if importlib.util.find_spec("bitsandbytes") is None:
            raise LitLoraError(
                f"model.quantization.mode={self.mode} needs bitsandbytes: pip install 'lit_lora[quant]'"
            )
        import bitsandbytes
        import bitsandbytes.functional as bnb_functional

        probe = torch.randn(64, 64, device=device)
        try:
            if self.mode == "int8":
                bnb_functional.int8_vectorwise_quant(probe.half() if device.type == "cuda" else probe)
            else:
                bnb_functional.quantize_4bit(probe, quant_type=self.mode)
        except Exception as err:  # bitsandbytes raises many types for "no kernel for this device"
            raise LitLoraError(
                f"model.quantization.mode={self.mode} is not supported on device '{device.type}' by "
                f"bitsandbytes {bitsandbytes.__version__} ({type(err).__name__}); use a CUDA or CPU device, "
                "or model.quantization.mode=none"
            ) from err
