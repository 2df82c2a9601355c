"""Activation offloading: tensors kept for backward wait in pinned host memory instead of on the GPU.

``torch.autograd.graph.save_on_cpu`` moves every tensor autograd saves during the forward to CPU and
brings it back when backward needs it: the GPU then holds the weights, optimizer states and one
layer's working set, at the price of host-device copies. With gradient checkpointing on, what is saved
is mostly each layer's input, so the two together leave little activation memory on the device.
Elsewhere (CPU, MPS) activations already live in the memory they would move to, or MPS has no pinned
host memory; the flag then does nothing, and says so once.
"""

from __future__ import annotations

import contextlib

import torch
from lightning.pytorch.utilities import rank_zero_warn


def offload_context(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a training forward runs in: ``save_on_cpu`` when asked for on CUDA, else nothing."""
    if enabled and device.type == "cuda":
        return torch.autograd.graph.save_on_cpu(pin_memory=True)
    return contextlib.nullcontext()


def warn_if_no_effect(enabled: bool, device: torch.device) -> None:
    if enabled and device.type != "cuda":
        rank_zero_warn(
            f"model.activation_offloading=true has no effect on {device.type}: activations are offloaded "
            "from a CUDA device only"
        )
