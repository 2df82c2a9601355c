"""``results.json`` in the run directory after every fit, validate and test."""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lit_lora.callbacks.meter import (
    MachineLoad,
    device_name,
    memory_details,
    peak_memory,
    reset_peak_memory,
)
from lit_lora.core.io import atomic_write_json
from lit_lora.data.sampler import is_padding_batch
from lit_lora.runtime.ranks import gather_per_rank, own_entry
from lit_lora.runtime.tracking import publish_results

LIBRARIES = (
    "lit_lora",
    "torch",
    "lightning",
    "transformers",
    "peft",
    "bitsandbytes",
    "datasets",
    "torchmetrics",
)


def run_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class ResultsRecorder(L.Callback):
    """Times training (validation excluded), counts samples and writes one JSON record per run.

    ``config_name`` and ``config`` are filled in by the CLI from the config file it parsed.
    """

    def __init__(self, filename: str = "results.json") -> None:
        self.filename = filename
        self.config_name: str | None = None
        self.config: dict[str, Any] | None = None
        self._start = 0.0
        self._train_seconds = 0.0
        self._epoch_start = 0.0
        self._eval_start = 0.0
        self._eval_seconds = 0.0
        self._samples = 0  # training rows of this rank
        self._padding_samples = 0  # and the repeated ones that even out the ranks' batch counts
        self._counts_to_restore: list[tuple[int, int]] | None = None  # every rank's, from a checkpoint
        self._eval_samples = 0
        self._train_batch_kinds: set[str] = set()  # packed and/or padded, as this rank's batches came
        self._started = False
        self._in_train_epoch = False
        self._evaluating = False
        self._load = MachineLoad()  # the host's load over training (fit) or testing (test)

    # ---- measuring --------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        reset_peak_memory(trainer.strategy.root_device)
        self._start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = True
        self._load.start()
        if self._counts_to_restore is not None:
            own = own_entry(self._counts_to_restore, "training-sample counts")
            self._samples, self._padding_samples = own
            self._counts_to_restore = None
        # A run resumed at the last batch of an epoch goes straight to that epoch's end, with no
        # epoch start: its clock starts here.
        self._start_train_epoch()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_train_epoch()

    def _start_train_epoch(self) -> None:
        self._epoch_start = time.perf_counter()
        self._eval_seconds = 0.0
        self._in_train_epoch = True

    def _train_seconds_so_far(self) -> float:
        """Finished epochs, plus the open epoch up to now less its evaluations (a running one too)."""
        if not self._in_train_epoch:
            return self._train_seconds
        now = time.perf_counter()
        evaluating = now - self._eval_start if self._evaluating else 0.0
        return self._train_seconds + now - self._epoch_start - self._eval_seconds - evaluating

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_padding_batch(trainer.train_dataloader, batch_idx):
            self._padding_samples += _batch_size(batch)
        else:
            self._samples += _batch_size(batch)
        if isinstance(batch, Mapping) and "input_ids" in batch:
            self._train_batch_kinds.add("packed" if "position_ids" in batch else "padded")
        self._load.sample()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_seconds = self._train_seconds_so_far()
        self._in_train_epoch = False

    # A checkpoint carries the training time and samples so far: a resumed run's record covers both
    # processes, not just the last one. Ranks count different rows: each rank's counts are kept (a
    # collective: Lightning asks every rank for its callbacks' state) and each takes its own back.
    def state_dict(self) -> dict[str, Any]:
        counts = gather_per_rank((self._samples, self._padding_samples))
        return {"train_seconds": self._train_seconds_so_far(), "samples": counts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_seconds = float(state_dict["train_seconds"])
        samples = state_dict["samples"]  # one int, rank zero's, in checkpoints from before per-rank counts
        counts = samples if isinstance(samples, list) else [(samples, 0)]
        self._counts_to_restore = [(int(real), int(padding)) for real, padding in counts]  # applied in fit

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = True
        self._eval_start = time.perf_counter()
        self._evaluating = True

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = True
        self._load.start()
        self._eval_start = time.perf_counter()
        self._evaluating = True

    def _eval_end(self) -> None:
        self._eval_seconds += time.perf_counter() - self._eval_start
        self._evaluating = False

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not is_padding_batch(trainer.test_dataloaders, batch_idx):
            self._eval_samples += _batch_size(batch)
        self._load.sample()

    # ---- writing ----------------------------------------------------------------------------------

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "fit")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end()
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end()
        self._write(trainer, pl_module, "test")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not self._started:
            return  # failed before any step (bad input): the CLI leaves no run behind, nor a record
        stage = trainer.state.fn.value if trainer.state.fn is not None else "fit"
        # No collective after a failure: a rank may already be gone. Rank zero records what it saw.
        failure = str(exception).splitlines()[0] if str(exception) else type(exception).__name__
        try:
            self._write(trainer, pl_module, stage, failure=failure)
        except OSError:  # the failure may be the disk itself; the original error is what matters
            pass

    def _write(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, failure: str | None = None
    ) -> None:
        if failure is None:
            # Each rank counted its own rows (ranks may hold different numbers); every rank joins the sum.
            counts = (self._samples, self._padding_samples, self._eval_samples)
            samples, padding_samples, eval_samples = (_sum_over_ranks(trainer, n) for n in counts)
            directory = run_dir(trainer)  # a broadcast under DDP: every rank asks
        else:
            # This rank's: no collective now.
            samples, padding_samples, eval_samples = self._samples, self._padding_samples, self._eval_samples
            directory = Path(trainer.logger.log_dir) if trainer.logger and trainer.logger.log_dir else None
        if not trainer.is_global_zero or directory is None:
            return
        device = trainer.strategy.root_device
        memory_mb, memory_kind = peak_memory(device)
        wall = time.perf_counter() - self._start
        record: dict[str, Any] = {
            "stage": stage,
            "status": "failed" if failure else "completed",
            **({"failure": failure} if failure else {}),
            "config_name": self.config_name,
            **_describe(pl_module, built_only=failure is not None),
            "metrics": {k: _number(v) for k, v in sorted(trainer.callback_metrics.items())},
            "peak_memory_mb": round(memory_mb, 1),
            "memory_kind": memory_kind,
            **memory_details(device),
            "wall_time_s": round(wall, 2),
            **(self._load.record() if stage in ("fit", "test") else {}),
            "device": device.type,
            "device_name": device_name(device),
            "num_devices": trainer.world_size,  # all processes, over every node
            "num_nodes": trainer.num_nodes,
            "precision": str(trainer.precision),
            "seed": _seed(),
            "validation_source": getattr(trainer.datamodule, "validation_source", None),
            "versions": library_versions(),
        }
        if stage == "fit":
            record.update(
                train_time_s=round(self._train_seconds, 2),
                train_samples=samples,  # rows of the training set, each time it was trained on
                train_padding_samples=padding_samples,  # rows repeated to give every rank as many batches
                samples_per_s=round(samples / self._train_seconds, 2) if self._train_seconds else None,
                global_steps=trainer.global_step,
                epochs=trainer.current_epoch,
            )
            if self._train_batch_kinds:  # what the batches were, not what was asked (data.packing auto)
                record["train_batches"] = "+".join(sorted(self._train_batch_kinds))
        elif stage == "test":
            record.update(
                test_samples=eval_samples,
                samples_per_s=round(eval_samples / self._eval_seconds, 2) if self._eval_seconds else None,
            )
        if self.config is not None:
            record["config"] = self.config
        atomic_write_json(directory / self.filename, record)
        publish_results(trainer.loggers, record, directory / self.filename, trainer.global_step)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping) and "position_ids" in batch:  # a packed row: each sequence starts at 0
        return int((batch["position_ids"] == 0).sum())
    if isinstance(batch, Mapping):  # dicts and transformers' BatchEncoding
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
    return 0


def _describe(pl_module: L.LightningModule, built_only: bool) -> dict[str, Any]:
    # After a failure the model may be what failed to build: describe it only if it exists.
    if not hasattr(pl_module, "describe") or (built_only and getattr(pl_module, "model", None) is None):
        return {}
    return pl_module.describe()


def _sum_over_ranks(trainer: L.Trainer, count: int) -> int:
    if trainer.world_size == 1:
        return count
    total = trainer.strategy.reduce(torch.tensor(count, device=trainer.strategy.root_device), reduce_op="sum")
    return int(total)


def _number(value: Any) -> float | int:
    if isinstance(value, torch.Tensor):
        value = value.item()
    return value


def _seed() -> int | None:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else None
