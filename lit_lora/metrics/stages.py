"""Metric objects per stage: each stage its own, built by one factory, so no state crosses stages."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn

MetricFactory = Callable[[str], Mapping[str, nn.Module]]


class StageMetrics(nn.ModuleDict):
    """``stage_metrics["val"]["loss"]``: a ModuleDict of fresh metric objects per stage.

    A stage is stored under ``"<stage>_metrics"``: ModuleDict entries are module attributes too, and a
    stage named ``train`` would collide with ``nn.Module.train``. Index by the stage name only.
    Metric states are registered non-persistent by torchmetrics, so none enters the state dict.
    """

    def __init__(self, make: MetricFactory, stages: Iterable[str]) -> None:
        super().__init__({_key(stage): nn.ModuleDict(make(stage)) for stage in stages})
        self._make = make

    def __getitem__(self, stage: str) -> nn.ModuleDict:
        return cast(nn.ModuleDict, super().__getitem__(_key(stage)))

    def __contains__(self, stage: str) -> bool:
        return super().__contains__(_key(stage))

    @contextmanager
    def discarded(self, stage: str, device: torch.device) -> Iterator[None]:
        """Inside, ``stage``'s updates go to fresh metrics that are then thrown away (padding batches that
        must compute like real ones, yet count for nothing)."""
        key = _key(stage)
        kept = super().__getitem__(key)
        self[key] = nn.ModuleDict(self._make(stage)).to(device)
        try:
            yield
        finally:
            self[key] = kept

    def reset(self, stage: str) -> None:
        """Clear every metric of ``stage`` (at the start and end of its epochs)."""
        for metric in self[stage].values():
            metric.reset()


def _key(stage: str) -> str:
    return f"{stage}_metrics"
