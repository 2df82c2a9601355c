"""Token counts of gradient-accumulation windows, for a loss normalised by the window's tokens.

A per-micro-batch token mean weighs a 5-token reply like a 500-token one once gradients are
accumulated; the HF Trainer (since 4.46) and torchtune divide the window's summed token losses by the
window's token count instead. The training order is known in advance (``LengthGroupedSampler`` is
deterministic per epoch and knows every rank's batches), so the count of every window, all ranks
included, is computed up front and no collective is needed during training.
"""

from __future__ import annotations

from collections.abc import Sequence

from lit_lora.data.sampler import LengthGroupedSampler

IGNORE = -100


def loss_tokens_per_row(labels: Sequence[Sequence[int]]) -> list[int]:
    """Predicted tokens of each row: labels after the first (position t predicts t + 1) not ignored."""
    return [sum(1 for t in row[1:] if t != IGNORE) for row in labels]


class WindowTokens:
    """Loss-bearing tokens of each accumulation window of an epoch, summed over all ranks."""

    def __init__(self, sampler: LengthGroupedSampler, row_tokens: list[int], accumulate: int) -> None:
        self.sampler = sampler
        self.row_tokens = row_tokens
        self.accumulate = accumulate
        self._epoch: int | None = None
        self._windows: list[int] = []

    def __call__(self, epoch: int, batch_idx: int) -> int:
        if self._epoch != epoch:
            self._windows = self._count(epoch)
            self._epoch = epoch
        return self._windows[batch_idx // self.accumulate]

    def _count(self, epoch: int) -> list[int]:
        per_rank = [self.sampler.batches_of_rank(epoch, rank) for rank in range(self.sampler.num_replicas)]
        steps = len(per_rank[0])
        windows = []
        for start in range(0, steps, self.accumulate):
            window = [b for batches in per_rank for b in batches[start : start + self.accumulate]]
            windows.append(sum(self.row_tokens[i] for batch in window for i in batch))
        return windows
