"""Stop at the first non-finite training loss, before any checkpoint can keep what it did."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from lit_lora.errors import LitLoraError


class NonFiniteLossError(LitLoraError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(L.Callback):
    """Raises one-line :class:`NonFiniteLossError` naming the step when the training loss is not finite.

    It runs before ``ModelCheckpoint`` (Lightning orders checkpoint callbacks last), so the step that
    produced the loss is never saved and the last checkpoint is the last good one; ``ResultsRecorder``
    writes ``results.json`` with ``status: failed`` and this message. Every rank joins the decision, so
    ranks stop together.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else math.nan if loss is None else loss
        finite = not isinstance(loss, torch.Tensor) or math.isfinite(value)
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        where = f"optimizer step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch_idx})"
        raise NonFiniteLossError(
            f"training loss is {value} at {where} on {'this rank' if not finite else 'another rank'}: run "
            "stopped; checkpoints before it are kept (lower model.learning_rate or use 32-true precision)"
        )
