"""Adapter and quantisation specifications: the one place that knows PEFT's and bitsandbytes' APIs.

Each spec is a small dataclass whose field docstrings become ``--help`` text. QLoRA is not a class:
it is any adapter spec plus a :class:`Quantization` with a mode other than ``none``.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from peft import AdaLoraConfig, LoraConfig, PeftConfig, TaskType

from lit_lora.errors import LitLoraError

QuantMode = Literal["none", "nf4", "fp4", "int8"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


class AdapterSpec(ABC):
    """What every adapter method spec provides. Abstract, so that jsonargparse parses ``model.adapter``
    by ``class_path`` and a command-line override such as ``--model.adapter.dropout 0`` changes the
    configured spec's field instead of re-picking the first spec whose fields accept the value."""

    method: ClassVar[str]

    @abstractmethod
    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        """The PEFT config; ``total_steps`` is the fit's optimizer step count (None outside fit)."""


@dataclass
class LoraSpec(AdapterSpec):
    """Fixed-rank LoRA (Hu et al., 2021)."""

    r: int = 8
    """Rank of every low-rank update unless ``rank_pattern`` says otherwise."""
    alpha: float = 16.0
    """Scaling numerator: updates are scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Module name suffixes to adapt; None uses PEFT's default for the architecture."""
    rank_pattern: dict[str, int] = field(default_factory=dict)
    """Per-module ranks, a name suffix or regex mapped to a rank: {'attention.self.query': 6}."""
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    """Per-module alphas, keyed like ``rank_pattern``."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases to train besides the adapter."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski, 2023)."""

    method: ClassVar[str] = "lora"

    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        _check_positive("model.adapter.r", self.r)
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
        )


@dataclass
class AdaLoraSpec(AdapterSpec):
    """AdaLoRA (Zhang et al., 2023): SVD-shaped updates whose ranks are reallocated during training.

    The total number of optimizer steps is taken from the trainer; it is never asked of the user.
    """

    init_r: int = 12
    """Initial rank of every adapted module."""
    target_r: int = 8
    """Average rank after reallocation: the final budget is target_r x number of adapted modules."""
    tinit: int | float = 0.1
    """Warm-up before any rank is pruned: a step count, or a fraction of all steps when below 1."""
    tfinal: int | float = 0.2
    """Final phase training the fixed rank pattern: a step count, or a fraction of all steps below 1."""
    delta_t: int = 1
    """Steps between two budget reallocations."""
    beta1: float = 0.85
    """EMA coefficient of the importance (sensitivity) estimate."""
    beta2: float = 0.85
    """EMA coefficient of the importance uncertainty."""
    orth_reg_weight: float = 0.1
    """Weight of the orthogonality regulariser on P and Q; PEFT's 0.5 swamps the task loss early on."""
    alpha: float = 32.0
    """Scaling numerator of the updates."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Module name suffixes to adapt; None uses PEFT's default for the architecture."""

    method: ClassVar[str] = "adalora"

    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        _check_positive("model.adapter.init_r", self.init_r)
        _check_positive("model.adapter.target_r", self.target_r)
        if self.target_r > self.init_r:
            raise LitLoraError(
                f"model.adapter.target_r={self.target_r} exceeds model.adapter.init_r={self.init_r}: "
                "AdaLoRA only prunes ranks"
            )
        if total_steps is None:  # built outside fit: a placeholder; every fit sets its own schedule
            total_steps, tinit, tfinal = 2, 0, 0
        else:
            tinit, tfinal = self.phases(total_steps)
        return AdaLoraConfig(
            task_type=task_type,
            init_r=self.init_r,
            target_r=self.target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.delta_t,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight,
            total_step=total_steps,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            modules_to_save=modules_to_save or None,
        )

    def phases(self, total_steps: int) -> tuple[int, int]:
        """(tinit, tfinal) in optimizer steps for a run of ``total_steps``."""
        tinit, tfinal = _steps(self.tinit, total_steps), _steps(self.tfinal, total_steps)
        if tinit + tfinal >= total_steps:
            raise LitLoraError(
                f"model.adapter.tinit + model.adapter.tfinal = {tinit + tfinal} steps leaves no "
                f"budgeting phase in {total_steps} optimizer steps; their sum must be smaller"
            )
        return tinit, tfinal


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

    def to_bnb_config(self, skip_modules: list[str], device: torch.device) -> Any:
        """A transformers ``BitsAndBytesConfig`` that keeps ``skip_modules`` (heads, pooler) unquantised.

        No skip modules (language models) leaves transformers' default, which keeps the output layer
        (``lm_head``) unquantised; an empty list would quantise it.
        """
        from transformers import BitsAndBytesConfig

        if self.mode == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules or None)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.mode,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=self.resolved_compute_dtype(device),
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


def _steps(value: int | float, total_steps: int) -> int:
    """A step count as given, or a fraction (below 1) of ``total_steps``."""
    if value < 0:
        raise LitLoraError(f"AdaLoRA phase length {value} must not be negative")
    return round(value * total_steps) if isinstance(value, float) and value < 1 else int(value)


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise LitLoraError(f"{key}={value} must be a positive integer")
