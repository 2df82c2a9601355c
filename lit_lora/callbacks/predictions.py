"""``predictions.jsonl``: every input's prediction once, in input order, whatever the number of ranks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_lora.callbacks.results import run_dir
from lit_lora.core.io import atomic_write_text


class PredictionsWriter(BasePredictionWriter):
    """Collects what ``predict_step`` returns (a list of dicts per batch) into ``predictions.jsonl``.

    Each rank keeps its batches keyed by their first dataset index (Lightning hands a writer the
    indices of every batch); rank zero gathers all of them, drops the copies that only even out the
    ranks' batch counts, and writes the rows in input order.
    """

    def __init__(self, filename: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self._batches: dict[int, list[str]] = {}

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = {}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not batch_indices:
            raise RuntimeError("lit_lora's predict loaders always tell Lightning their batch indices")
        self._batches.setdefault(int(batch_indices[0]), [json.dumps(row) for row in prediction or []])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches, directory = self._batches, run_dir(trainer)  # a broadcast under DDP: every rank asks
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            parts: list[dict[int, list[str]] | None] = [None] * trainer.world_size
            dist.all_gather_object(parts, batches)
            batches = {}
            for part in parts:
                for first_index, lines in (part or {}).items():
                    batches.setdefault(first_index, lines)
        if trainer.is_global_zero:
            lines = [line for first_index in sorted(batches) for line in batches[first_index]]
            atomic_write_text(directory / self.filename, "".join(f"{line}\n" for line in lines))
