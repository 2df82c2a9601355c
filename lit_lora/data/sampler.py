"""Length-grouped shuffling: batches of similar length, a fresh seeded order every epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Yields indices so that consecutive ``batch_size`` runs hold rows of similar length.

    Each epoch shuffles all rows, cuts them into mega-batches of ``mega_batches`` batches, sorts each
    mega-batch by length and shuffles the order of the resulting batches. The order depends only on
    ``seed`` and the epoch (Lightning calls ``set_epoch``), so every DDP rank agrees and a resumed run
    sees the same batches as an uninterrupted one.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batches: int = 50
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batches = mega_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        span = self.batch_size * self.mega_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=self.lengths.__getitem__, reverse=True)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b]
