"""State that differs between ranks in a checkpoint: each rank's entry is saved, and each takes its own back.

Lightning builds the checkpoint on every rank but only rank zero writes it, so anything a rank keeps
for itself (its RNG, its loader position, the rows it counted) would be rank zero's after a resume.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from lit_lora.errors import LitLoraError


def world() -> tuple[int, int]:
    """(number of ranks, this rank) of the default process group; (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_per_rank(state: Any) -> list[Any]:
    """Every rank's ``state`` (picklable), in rank order. A collective: every rank must call it, as
    every rank runs Lightning's checkpoint hooks."""
    size, _ = world()
    if size == 1:
        return [state]
    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, state)
    return gathered


def own_entry(per_rank: list[Any], what: str) -> Any:
    """This rank's entry of a ``gather_per_rank`` list read from a checkpoint.

    Refuses a checkpoint saved by another number of ranks: rank r's state then belongs to no rank of
    this run (its loader shard differs too), and any mapping would resume inexactly.
    """
    size, rank = world()
    if len(per_rank) != size:
        raise LitLoraError(
            f"the checkpoint holds {what} for {len(per_rank)} rank(s) (one if saved before lit_lora kept "
            f"per-rank state), this run has {size}: resume with the same trainer.devices x num_nodes"
        )
    return per_rank[rank]
