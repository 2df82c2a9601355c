"""Host memory freed by each layer goes back to the OS, so a CPU run's RSS follows its live tensors.

glibc keeps the memory torch frees and serves later allocations from it, but in a checkpointed CPU
forward what one layer frees sits between tensors that stay alive (each layer's input), and the heap
grows by most of a layer's working set per layer: +71-79 MB per SmolLM2-135M layer at 2,084 tokens,
against 4.6 MB of live input (``benchmarks/heap_growth.py``). ``malloc_trim(0)`` hands every free page
of every arena back to the OS; called after each layer's forward and backward, it keeps the peak at what
tensors hold (SmolLM2-135M SFT: -53 % peak RSS for +10-26 % step time, docs/performance.md). It changes
no number. Elsewhere it does nothing: a GPU's memory is torch's caching allocator's, and other C
libraries (macOS, musl) have no ``malloc_trim``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.hooks import RemovableHandle

try:
    from transformers.modeling_layers import GradientCheckpointingLayer as _TransformerLayer
except ImportError:  # transformers < 4.52: no common class for layers
    _TransformerLayer = None


@functools.cache
def malloc_trim() -> Callable[[int], Any] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (decoder or encoder layers), as transformers marks them."""
    if _TransformerLayer is None:
        return []
    return [module for module in model.modules() if isinstance(module, _TransformerLayer)]


def _trim(_: Any = None) -> None:
    trim = malloc_trim()
    if trim is not None:
        trim(0)


def _trim_after_cpu_layer(module: nn.Module, args: Any, output: Any) -> None:
    weight = next(module.parameters(), None)
    if weight is None or weight.device.type != "cpu":
        return
    _trim()
    hidden = output[0] if isinstance(output, tuple) else output
    if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
        # The gradient of this layer's output arrives once the next layer's backward is done. A
        # checkpointed layer's recompute stops as soon as it has what backward needs, before its forward
        # hooks, so backward is trimmed here.
        hidden.register_hook(_trim)


def trim_after_each_layer(model: nn.Module) -> list[RemovableHandle]:
    """Return freed host memory to the OS after every layer's forward and backward on CPU; the hooks'
    handles."""
    return [layer.register_forward_hook(_trim_after_cpu_layer) for layer in transformer_layers(model)]


def warn_if_trim_has_no_effect(enabled: bool, model: nn.Module, device: torch.device) -> None:
    if not enabled:
        return
    if device.type != "cpu":
        why = f"on {device.type} the memory layers free stays with torch's allocator"
    elif malloc_trim() is None:
        why = "this C library has no malloc_trim (glibc's)"
    elif not transformer_layers(model):
        why = f"{type(model).__name__} has no transformers layers (GradientCheckpointingLayer) to trim after"
    else:
        return
    rank_zero_warn(f"model.trim_host_memory=true has no effect: {why}")
