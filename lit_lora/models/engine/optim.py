"""The optimizer and LR schedule of a fit: injected callables (LightningCLI style) or the defaults,
AdamW with linear warm-up and decay."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from transformers import get_linear_schedule_with_warmup


def configure(
    trainer: L.Trainer,
    groups: list[dict[str, Any]],
    optimizer: OptimizerCallable | None,
    lr_scheduler: LRSchedulerCallable | None,
    learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
) -> dict[str, Any]:
    """What ``configure_optimizers`` returns; the schedule steps with the optimizer, not per epoch."""
    built = (
        optimizer(groups) if optimizer is not None else _adamw(trainer, groups, learning_rate, weight_decay)
    )
    if lr_scheduler is not None:
        scheduler = lr_scheduler(built)
    else:
        total = int(trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(built, math.ceil(warmup_ratio * total), total)
    return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _adamw(
    trainer: L.Trainer, groups: list[dict[str, Any]], learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    # The fused kernel (as the HF Trainer uses) makes the step several times cheaper on CPU and CUDA.
    # Not under mixed precision: Lightning's AMP plugin refuses to clip gradients for a fused step.
    params = [p for group in groups for p in group["params"]]
    mixed = "mixed" in str(trainer.precision)
    fused = not mixed and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay, fused=fused)
