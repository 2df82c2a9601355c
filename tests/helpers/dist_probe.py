"""Callbacks that multi-process tests add from the command line (``--trainer.callbacks+=...``).

At the end of fit every rank saves what it trained (trainable tensors and, for AdaLoRA, the final rank
pattern) to ``$LIT_LORA_RANK_DUMP/rank<N>.pt``, so a test can compare the ranks with each other.
``KillAtStep`` kills every rank mid-run, for the resume test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch


class RankDump(L.Callback):
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        directory = Path(os.environ["LIT_LORA_RANK_DUMP"])
        directory.mkdir(parents=True, exist_ok=True)
        model = pl_module.peft_model
        trained = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        pattern = getattr(model.peft_config["default"], "rank_pattern", None)
        ranks = {k: [bool(b) for b in v] for k, v in (pattern or {}).items()}
        torch.save({"trained": trained, "rank_pattern": ranks}, directory / f"rank{trainer.global_rank}.pt")


class KillAtStep(L.Callback):
    """Every rank dies like a preempted job, with no chance to clean up, after optimizer step
    ``$LIT_LORA_KILL_AT_STEP`` (before that step's checkpoint: Lightning runs checkpoint callbacks last)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == int(os.environ["LIT_LORA_KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)
