"""Export the trained adapter in PEFT format at the end of fit."""

from __future__ import annotations

import lightning as L

from lit_lora.callbacks.results import run_dir
from lit_lora.runtime.tracking import publish_adapter


class AdapterExport(L.Callback):
    """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` to ``<run dir>/<dirname>``, and
    hands the folder to the trackers configured (an artifact in W&B and MLflow)."""

    def __init__(self, dirname: str = "adapter") -> None:
        self.dirname = dirname

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank: the run directory is agreed by a broadcast, and ZeRO-3 gathers weights to save.
        directory = run_dir(trainer) / self.dirname
        if hasattr(pl_module, "save_adapter"):
            pl_module.save_adapter(directory)
            if trainer.is_global_zero:
                publish_adapter(trainer.loggers, directory, trainer.global_step)
