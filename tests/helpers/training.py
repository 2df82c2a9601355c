"""A seeded fit with its loss trace, and which adapter weights changed or train."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from tests.helpers.builders import trainer


class LossTrace(L.Callback):
    """The training loss of every batch, in order."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


class StopAfterFirstEpoch(L.Callback):
    """Simulates an interrupted run: same schedule as the full run, stopped half-way."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


def fit(module: L.LightningModule, datamodule: L.LightningDataModule, root, **kwargs: Any) -> LossTrace:
    """Seeds everything with 0 and fits with the test trainer; ``ckpt_path`` and ``callbacks`` pass on."""
    trace = LossTrace()
    ckpt_path = kwargs.pop("ckpt_path", None)
    callbacks = [trace, *kwargs.pop("callbacks", [])]
    L.seed_everything(0)
    trainer(root, callbacks=callbacks, **kwargs).fit(module, datamodule, ckpt_path=ckpt_path)
    return trace


def snapshot(module) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """A CPU copy of the PEFT model's state (wherever the model lives)."""
    return {k: v.detach().cpu().clone() for k, v in module.peft_model.state_dict().items()}


def changed_keys(before: dict[str, torch.Tensor], module) -> set[str]:  # noqa: ANN001
    after = module.peft_model.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k].detach().cpu())}


def trainable_keys(module) -> set[str]:  # noqa: ANN001
    return {n for n, p in module.peft_model.named_parameters() if p.requires_grad}
