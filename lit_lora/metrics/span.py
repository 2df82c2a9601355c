"""Extractive QA window metrics: how often the highest-scoring start and end tokens are the labelled ones."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SpanAccuracy(Metric):
    """``start_acc`` / ``end_acc``: fraction of windows whose argmax start / end token is the label.

    The argmax runs over the window's real tokens (padding excluded), CLS included, so an unanswerable
    window is right when it points at CLS. Counts are summed over ranks.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("right_starts", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("right_ends", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("windows", torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        start_logits: torch.Tensor,
        end_logits: torch.Tensor,
        attention_mask: torch.Tensor,
        start_positions: torch.Tensor,
        end_positions: torch.Tensor,
    ) -> None:
        padding = ~attention_mask.bool()

        def right(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            return (logits.masked_fill(padding, -torch.inf).argmax(dim=-1) == positions).sum()

        # Out of place: states reset under inference mode are inference tensors (see TokenNLL).
        self.right_starts = self.right_starts + right(start_logits, start_positions)
        self.right_ends = self.right_ends + right(end_logits, end_positions)
        self.windows = self.windows + start_positions.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        windows = self.windows.clamp(min=1)
        return {"start_acc": self.right_starts / windows, "end_acc": self.right_ends / windows}
