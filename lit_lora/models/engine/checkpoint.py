"""What lit_lora puts in and checks on a checkpoint: adapter-only weights, per-rank RNG and loader state,
matching keys."""

from __future__ import annotations

from typing import Any

import torch

from lit_lora.errors import LitLoraError
from lit_lora.runtime.ranks import gather_per_rank, own_entry

RANK_STATES = "rank_states"


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


def _loader_states(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Where Lightning keeps the training loader's position (this rank's, in the checkpoint it builds)."""
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})


def save_rank_states(checkpoint: dict[str, Any]) -> None:
    """Every rank's RNG states and training-loader position, in rank order (see lit_lora.runtime.ranks).

    Ranks draw different numbers of dropout values (their batches differ in shape), so their RNGs part.
    """
    own = {"rng_states": rng_states(), "train_loader": _loader_states(checkpoint).get("combined_loader")}
    checkpoint[RANK_STATES] = gather_per_rank(own)


def take_own_rank_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """This rank's RNG states, to restore when training starts; its loader position replaces rank
    zero's where Lightning reads it. Refuses a checkpoint saved by another number of ranks."""
    if RANK_STATES in checkpoint:
        per_rank = checkpoint[RANK_STATES]
    elif "rng_states" in checkpoint:  # saved before per-rank state: rank zero's RNG only
        per_rank = [{"rng_states": checkpoint["rng_states"], "train_loader": None}]
    else:
        return None
    own = own_entry(per_rank, "RNG and data-loader state")
    if own["train_loader"] is not None:
        _loader_states(checkpoint)["combined_loader"] = own["train_loader"]
    return own["rng_states"]


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
