"""Python objects collected batch by batch and gathered from every rank: per-window SQuAD results."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

import torch.distributed as dist
from torch import nn

T = TypeVar("T")


class GatheredObjects(nn.Module, Generic[T]):
    """``update`` appends objects, ``compute`` returns every rank's (rank by rank), ``reset`` empties.

    The update / compute / reset cycle of a torchmetrics ``Metric``, but not one: torchmetrics syncs
    tensor states only, and it walks whatever ``compute`` returns (twice) looking for tensors, which
    took about 50 s for 12k windows of 20 spans each (a busy 2-core CPU). The objects are a plain list,
    so they never enter the state dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self.items: list[T] = []

    def update(self, items: Iterable[T]) -> None:
        self.items.extend(items)

    def compute(self) -> list[T]:
        """All ranks' objects; every rank must call it (it is a collective under torch.distributed)."""
        if not (dist.is_available() and dist.is_initialized()):
            return list(self.items)
        parts: list[list[T]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(parts, self.items)
        return [item for part in parts for item in part]

    def reset(self) -> None:
        self.items = []
