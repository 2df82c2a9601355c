"""Export the trained adapter in PEFT format at the end of fit, and predictions as JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from lit_lora._io import atomic_write_text
from lit_lora.callbacks.results import run_dir


class AdapterExport(L.Callback):
    """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` to ``<run dir>/<dirname>``."""

    def __init__(self, dirname: str = "adapter") -> None:
        self.dirname = dirname

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and hasattr(pl_module, "save_adapter"):
            pl_module.save_adapter(run_dir(trainer) / self.dirname)


class PredictionsWriter(L.Callback):
    """Collects what ``predict_step`` returns (a list of dicts per batch) into ``predictions.jsonl``."""

    def __init__(self, filename: str = "predictions.jsonl") -> None:
        self.filename = filename
        self._lines: list[str] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._lines = []

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._lines.extend(json.dumps(row) for row in outputs or [])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            path: Path = run_dir(trainer) / self.filename
            atomic_write_text(path, "".join(f"{line}\n" for line in self._lines))
