"""Rank-aware samplers: whole batches per rank, every row counted once in evaluation.

lit_lora shards by itself, never through Lightning's samplers: its ``DistributedSamplerWrapper``
reshuffles a custom training order (undoing length grouping) and its evaluation sampler pads the split
with repeated rows (counted twice by every metric). The training sampler subclasses
``DistributedSampler`` so that Lightning leaves it alone; evaluation batch samplers ignore whatever
sampler Lightning injects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DistributedSampler


def shard_batches(batches: list[list[int]], num_replicas: int, rank: int) -> list[list[int]]:
    """Every ``num_replicas``-th batch, starting at ``rank``: a rank's batches keep the global order."""
    return batches[rank::num_replicas]


def chunk(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


class _RankSampler(DistributedSampler):
    """A ``DistributedSampler`` in name (see the module docstring) whose subclasses decide the order."""

    def __init__(self, num_rows: int, num_replicas: int, rank: int) -> None:
        super().__init__(range(num_rows), num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]

    def _batches(self) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        for batch in self._batches():
            yield from batch

    def __len__(self) -> int:
        return sum(len(batch) for batch in self._batches())


class LengthGroupedSampler(_RankSampler):
    """Training order in which every batch holds rows of similar length, on any number of ranks.

    Each epoch shuffles all rows, cuts them into mega-batches of ``mega_batches`` batches, sorts each
    mega-batch by length and shuffles the order of the full batches; the one short batch, if any, comes
    last so that the loader's ``batch_size`` chunks never straddle two groups. With several ranks the
    batch list is padded by repeating its first batches to a multiple of ``num_replicas`` (as
    ``DistributedSampler`` pads rows) and rank ``r`` takes every ``num_replicas``-th batch from ``r``:
    the same number of whole batches on every rank. The order depends only on ``seed`` and the epoch
    (Lightning calls ``set_epoch``), so ranks agree and a resumed run sees the same batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        mega_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(len(lengths), num_replicas, rank)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batches = mega_batches
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of all ranks for ``epoch`` (default: the current one), before sharding and padding."""
        # On the CPU explicitly: Lightning can ask for the length inside a default-device context
        # (torch.device("cuda")), where a CPU generator would be refused.
        seed = self.seed + (self.epoch if epoch is None else epoch)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        order = torch.randperm(len(self.lengths), generator=generator, device="cpu").tolist()
        span = self.batch_size * self.mega_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            group = sorted(order[start : start + span], key=self.lengths.__getitem__, reverse=True)
            batches.extend(chunk(group, self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        shuffled = torch.randperm(len(full), generator=generator, device="cpu").tolist()
        return [full[i] for i in shuffled] + short

    def batches_of_rank(self, epoch: int, rank: int) -> list[list[int]]:
        """The batches that ``rank`` trains on in ``epoch``."""
        batches = self.global_batches(epoch)
        missing = -len(batches) % self.num_replicas
        padded = batches + [batches[i % len(batches)] for i in range(missing)] if batches else []
        return shard_batches(padded, self.num_replicas, rank)

    @property
    def real_batches(self) -> int:
        """How many of this rank's batches are not repeats; the rest only even out the ranks.

        Every epoch cuts the rows into the same number of batches (only the last mega-batch can leave a
        short one), and the repeats come after all of them in the order the ranks take their turns.
        """
        batches = -(-len(self.lengths) // self.batch_size)
        return len(range(self.rank, batches, self.num_replicas))

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self.batches_of_rank(self.epoch, self.rank))
        return self._cache[1]


class ShardedBatches(BatchSampler):
    """Evaluation and prediction batches of one rank: each batch of ``batches`` on exactly one rank.

    Ranks may hold different numbers of batches; ``pad_batches`` evens them out by appending copies of
    the first batch (ZeRO-3 needs every rank to run the same number of forward passes). Batches from
    index ``real_batches`` on are such copies and must not reach any metric or prediction.

    ``sampler`` is ignored: Lightning re-creates a predict loader's batch sampler with a sampler of
    its own (a distributed one, if it thinks sharding is needed), and the batches here are already final.
    """

    def __init__(
        self,
        sampler: Any = None,
        batch_size: int = 1,
        drop_last: bool = False,
        batches: list[list[int]] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        pad_batches: bool = False,
    ) -> None:
        super().__init__(range(0), batch_size, drop_last)  # type: ignore[arg-type]
        everything = batches or []
        self.batches = shard_batches(everything, num_replicas, rank)
        self.real_batches = len(self.batches)
        if pad_batches and everything:
            most = -(-len(everything) // num_replicas)
            self.batches += [everything[0]] * (most - len(self.batches))

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches

    def __len__(self) -> int:
        return len(self.batches)


def is_padding_batch(loader: Any, batch_idx: int) -> bool:
    """Whether batch ``batch_idx`` of ``loader`` only evens out the ranks' batch counts."""
    batches = getattr(loader, "batch_sampler", None)
    batches = getattr(batches, "_batch_sampler", batches)  # Lightning's index-tracking wrapper (predict)
    real = getattr(batches, "real_batches", None)
    if real is None:  # training: the loader's batches are the sampler's, cut by batch_size
        real = getattr(getattr(batches, "sampler", None), "real_batches", None)
    return real is not None and batch_idx >= real
