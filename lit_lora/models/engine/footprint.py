"""Bytes the model's weights occupy: what quantisation saves, apart from the process's peak memory."""

from __future__ import annotations

from typing import Any

import torch


def _tensor_bytes(tensor: Any) -> int:
    if not isinstance(tensor, torch.Tensor):
        return 0
    # ZeRO-3 leaves a partitioned parameter empty on every rank; ds_numel is its whole size.
    return getattr(tensor, "ds_numel", tensor.numel()) * tensor.element_size()


def _quantisation_constants_bytes(param: torch.Tensor) -> int:
    """bitsandbytes keeps a 4-bit weight's block scales (and, double-quantised, their own scales and
    code book) in a ``quant_state``, and an 8-bit weight's row scales in ``SCB``: not parameters or
    buffers, so a parameter count misses them."""
    state = getattr(param, "quant_state", None)
    total = _tensor_bytes(getattr(param, "SCB", None))
    while state is not None:
        total += _tensor_bytes(getattr(state, "absmax", None)) + _tensor_bytes(getattr(state, "code", None))
        total += _tensor_bytes(getattr(state, "offset", None))
        state = getattr(state, "state2", None)
    return total


def weight_footprint_bytes(model: torch.nn.Module) -> int:
    """Parameters and buffers as stored (a 4-bit weight is its packed bytes), adapters included, plus
    bitsandbytes' quantisation constants; a tensor shared by several modules counts once. Under ZeRO-3
    the whole model's, as one process holds it, not one rank's partition."""
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        # Partitioned parameters all share an empty storage: DeepSpeed's id tells them apart.
        ds_id = getattr(tensor, "ds_id", None)
        key = ("zero3", ds_id) if ds_id is not None else (tensor.data_ptr(), tensor.numel())
        if key in seen:
            continue
        seen.add(key)
        total += _tensor_bytes(tensor) + _quantisation_constants_bytes(tensor)
    return total
