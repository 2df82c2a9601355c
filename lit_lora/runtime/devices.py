"""What the chosen accelerator can run, checked at start-up before any weights load (Apple MPS rules).

On MPS (read off bitsandbytes 0.50.2's source and torch's autocast):

- bitsandbytes >= 0.50 has an MPS backend: NF4/FP4 4-bit (double quantisation included) and LLM.int8()
  run on Apple GPUs through pure-PyTorch kernels (Metal kernels from the hub only on macOS 26+ with the
  ``kernels`` package); it needs torch >= 2.9. Older bitsandbytes cannot quantise on MPS at all.
- MPS has no float64, and bfloat16 only from macOS 14: below that torch's autocast silently turns
  itself off (a run meant as bf16 trains in float32) and bfloat16 tensors fail.
- MPS is one device: no DDP, DeepSpeed or FSDP.

The fused AdamW step is restricted to CPU and CUDA by ``PeftModule.configure_optimizers``, so MPS
always gets the foreach step and needs no rule here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

import torch
from lightning.pytorch.accelerators import MPSAccelerator
from lightning.pytorch.strategies import ParallelStrategy
from packaging.version import Version

from lit_lora.core.quantization import Quantization
from lit_lora.errors import LitLoraError

BNB_MPS_MIN = Version("0.50")  # first bitsandbytes release whose MPS backend runs without hub kernels
TORCH_FOR_BNB_MPS_MIN = Version("2.9")
_PARALLEL_NAMES = ("ddp", "deepspeed", "fsdp")


def installed_version(package: str) -> Version | None:
    try:
        return Version(importlib.metadata.version(package))
    except importlib.metadata.PackageNotFoundError:
        return None


def mps_bf16_supported() -> bool:
    """bfloat16 on MPS: macOS 14 or newer (the test torch's autocast applies itself)."""
    return torch.backends.mps.is_macos_or_newer(14, 0)


def resolves_to_mps(accelerator: Any) -> bool:
    """Whether Lightning will train on MPS: `auto` and `gpu` pick MPS first where it exists."""
    if isinstance(accelerator, MPSAccelerator):
        return True
    return accelerator in ("mps", "auto", "gpu", None) and MPSAccelerator.is_available()


def check_single_device(accelerator: Any, strategy: Any, devices: Any) -> None:
    """Before the Trainer is built: MPS is one device (Lightning would refuse with a traceback)."""
    if not resolves_to_mps(accelerator):
        return
    name = strategy if isinstance(strategy, str) else type(strategy).__name__
    parallel = isinstance(strategy, ParallelStrategy) or (
        isinstance(strategy, str) and any(key in strategy for key in _PARALLEL_NAMES)
    )
    if parallel:
        raise LitLoraError(
            f"trainer.strategy={name}: MPS is a single device; use trainer.strategy auto, "
            "or trainer.accelerator cpu/cuda for a distributed strategy"
        )
    count = _device_count(devices)
    if count is not None and count > 1:
        raise LitLoraError(f"trainer.devices={devices}: MPS is a single device; use trainer.devices 1")


def check_cluster_settings(trainer: Any) -> None:
    """When the Trainer is built: ``trainer.devices`` x ``num_nodes`` against what the launcher started
    (SLURM's ``--ntasks-per-node`` and ``--nodes``, torchrun's world size). Lightning checks this only
    once ``fit`` launches, after the model is built, and with a traceback."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if environment is None:
        return
    try:
        environment.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    except ValueError as err:
        raise LitLoraError(
            f"trainer.devices={trainer.num_devices}, trainer.num_nodes={trainer.num_nodes}: "
            f"{str(err).splitlines()[0]}"
        ) from err


def _device_count(devices: Any) -> int | None:
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, int) or (isinstance(devices, str) and devices.strip().isdigit()):
        return int(devices)
    return None  # "auto", -1, "0,1,": Lightning parses those and finds one MPS device


def check_device_support(device: torch.device, precision: str, quantization: Quantization | None) -> None:
    """Refuse, in one line, what ``device`` cannot run at ``precision`` with ``quantization``."""
    if device.type != "mps":
        return
    if precision.startswith("64"):
        raise LitLoraError(f"trainer.precision={precision}: MPS has no float64; use 32-true or 16-mixed")
    if precision.startswith("bf16") and not mps_bf16_supported():
        raise LitLoraError(
            f"trainer.precision={precision}: bfloat16 on MPS needs macOS 14 or newer; use 16-mixed or 32-true"
        )
    if quantization is not None and quantization.enabled:
        _check_mps_quantization(quantization)


def _check_mps_quantization(quantization: Quantization) -> None:
    key = f"model.quantization.mode={quantization.mode}"
    bnb = installed_version("bitsandbytes")
    if bnb is None:
        raise LitLoraError(f"{key} needs bitsandbytes: pip install 'lit_lora[quant]'")
    if bnb < BNB_MPS_MIN or importlib.util.find_spec("bitsandbytes.backends.mps") is None:
        raise LitLoraError(
            f"{key} on MPS needs bitsandbytes>={BNB_MPS_MIN} (its MPS backend), found {bnb}: "
            "pip install -U bitsandbytes, or use model.quantization.mode=none"
        )
    torch_version = Version(torch.__version__).release
    if torch_version < TORCH_FOR_BNB_MPS_MIN.release:
        raise LitLoraError(
            f"{key} on MPS needs torch>={TORCH_FOR_BNB_MPS_MIN} (bitsandbytes' MPS backend), "
            f"found {torch.__version__}; upgrade torch, or use model.quantization.mode=none"
        )
    if quantization.compute_dtype == "bfloat16" and not mps_bf16_supported():
        raise LitLoraError(
            "model.quantization.compute_dtype=bfloat16: bfloat16 on MPS needs macOS 14 or newer; "
            "use float16 or float32"
        )
