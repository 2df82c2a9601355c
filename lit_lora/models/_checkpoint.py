"""What lit_lora puts in and checks on a checkpoint: adapter-only weights, RNG states, matching keys."""

from __future__ import annotations

from typing import Any

import torch

from lit_lora.errors import LitLoraError


def rng_states() -> dict[str, Any]:
    """Dropout draws from these: without them a resumed run gets other masks than an uninterrupted one."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def check_checkpoint_keys(saved: dict[str, Any], own: dict[str, Any], trained: set[str]) -> None:
    """Refuse a checkpoint with keys this model lacks, without ones it trains (a random head would be
    evaluated), or with other shapes (another rank)."""
    for key in sorted(set(saved) & set(own)):
        if tuple(saved[key].shape) != tuple(own[key].shape):
            raise LitLoraError(
                f"checkpoint does not fit this model/adapter: {key} has shape {tuple(saved[key].shape)}, "
                f"this model's is {tuple(own[key].shape)}; check model.adapter (r, target_modules)"
            )
    for kind, keys in (("unexpected", set(saved) - set(own)), ("missing", trained - set(saved))):
        if keys:
            raise LitLoraError(
                f"checkpoint does not fit this model/adapter: {kind} key {sorted(keys)[0]} "
                f"(and {len(keys) - 1} more); check model.model_name_or_path and model.adapter"
            )
