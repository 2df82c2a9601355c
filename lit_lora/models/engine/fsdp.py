"""What FSDP2 changes for PeftModule: sharding once built, whole adapter tensors to export."""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from torch.distributed.tensor import DTensor

from lit_lora.methods.base import ADAPTER


def shards_model(strategy: Any) -> bool:
    """Whether the strategy shards the built model (LitLoraFSDP2)."""
    return getattr(strategy, "shard_model", None) is not None


def shard_if_asked(model: PeftModel, strategy: Any) -> None:
    """Let the strategy shard the built model; elsewhere nothing changes."""
    if shards_model(strategy):
        strategy.shard_model(model)


def whole_adapter_state(model: PeftModel) -> dict[str, torch.Tensor] | None:
    """The adapter and trained heads, each tensor whole on every rank (a collective: every rank calls
    it); None when nothing is sharded, where PEFT reads the model itself.

    Only these are gathered, never the frozen base: PEFT's export picks its keys from this state dict.
    """
    state = model.state_dict()
    if not any(isinstance(t, DTensor) for t in state.values()):
        return None
    # As DeepSpeed's gathered_adapter: trainable ones, and the frozen ones PEFT saves too.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        name: (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu()
        for name, t in state.items()
        if name in trainable or ADAPTER in name.split(".")
    }
