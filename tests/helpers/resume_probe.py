"""One seeded tiny fit per PEFT method, killed with SIGKILL mid-epoch when asked.

``python -m tests.helpers.resume_probe METHOD MODEL DATA ROOT KILL_AT_STEP [every_epoch]`` is the interrupted
run that the resume test starts as a subprocess; the test runs ``fit_case`` itself for the uninterrupted and
the resumed runs. Checkpoints come every 2 optimizer steps, or with ``every_epoch`` once an epoch (saved in
``on_train_epoch_end``, after the epoch's last batch and its hooks).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_lora import AdaLoraSpec, LoraSpec, Quantization
from lit_lora.models import SequenceClassifier
from tests.helpers import classifier, sst2, trainer

ACCUMULATE = 2
ADAPTERS = {
    "lora": LoraSpec(r=4, alpha=8, dropout=0.1),
    "qlora": LoraSpec(r=4, alpha=8, dropout=0.1),
    "adalora": AdaLoraSpec(init_r=6, target_r=3, tinit=2, tfinal=2, dropout=0.1),
}


class KillAt(L.Callback):
    """Dies like a preempted job, with no chance to clean up, after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and (batch_idx + 1) % ACCUMULATE == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def fit_case(
    method: str,
    model: Path,
    data: Path,
    root: Path,
    kill_at: int | None = None,
    ckpt_path: str | None = None,
    every_epoch: bool = False,
) -> SequenceClassifier:
    torch.set_num_threads(1)  # the same kernels in the test process and in the killed subprocess
    L.seed_everything(0)
    quantization = Quantization(mode="nf4") if method == "qlora" else None
    module = classifier(model, adapter=ADAPTERS[method], quantization=quantization, num_labels=2)
    every = {"every_n_epochs": 1} if every_epoch else {"every_n_train_steps": 2}
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, **every)
    callbacks: list[L.Callback] = [checkpoint] + ([KillAt(kill_at)] if kill_at else [])
    run = trainer(
        root, max_epochs=2, accumulate_grad_batches=ACCUMULATE, enable_checkpointing=True, callbacks=callbacks
    )
    run.fit(module, sst2(model, data), ckpt_path=ckpt_path)
    return module


if __name__ == "__main__":
    method, model, data, root, step, *every = sys.argv[1:]
    fit_case(
        method, Path(model), Path(data), Path(root), kill_at=int(step), every_epoch=every == ["every_epoch"]
    )
    raise SystemExit("the run was meant to be killed before it finished")
