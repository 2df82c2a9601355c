"""Callbacks that the DeepSpeed tests add to a CLI run to see what each rank holds after fit."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy


class DumpRankPattern(L.Callback):
    """Every rank writes AdaLoRA's rank pattern to ``<root dir>/rank_pattern.<global rank>.json``, with
    the allocator's importance after every batch (the sum of its smoothed sensitivity, |weight x grad|):
    it follows the gradients the allocator scored, which the pattern of a short run may not show.

    Under DeepSpeed also how far the optimizer's fp32 master copy of the singular values (lora_E) is
    from the module's masked copy: 0 when the masks reached the copy that the next step starts from.
    """

    def __init__(self) -> None:
        self.importance: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        smoothed = pl_module.peft_model.base_model.rankallocator.exp_avg_ipt
        self.importance.append(sum(v.sum().item() for v in smoothed.values()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.peft_model
        record = {
            "pattern": model.peft_config["default"].rank_pattern,
            "master_gap": None,
            "importance": self.importance,
        }
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            from deepspeed.utils import safe_get_full_fp32_param

            gaps = [
                (safe_get_full_fp32_param(p) - p.data).abs().max().item()
                for n, p in model.named_parameters()
                if ".lora_E." in n
            ]
            record["master_gap"] = max(gaps)
        path = Path(trainer.default_root_dir) / f"rank_pattern.{trainer.global_rank}.json"
        path.write_text(json.dumps(record, sort_keys=True))


class DumpLogits(L.Callback):
    """Logits of the in-memory model on the first validation batch, saved by rank 0 with the batch.

    Every rank runs the forward: under ZeRO-3 each forward gathers weights from all ranks.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batch = next(iter(trainer.datamodule.val_dataloader()))
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        pl_module.eval()
        with torch.no_grad():
            logits = pl_module.peft_model(**inputs).logits
        pl_module.train()
        if trainer.is_global_zero:
            torch.save({"inputs": inputs, "logits": logits}, Path(trainer.default_root_dir) / "logits.pt")


class DumpSteps(L.Callback):
    """Every rank writes its step counts, last learning rate and the gradient norm of every optimizer
    step (the norm that clipping compares with its threshold) to ``<root dir>/steps.<global rank>.json``.

    Under DDP the norm is taken from ``.grad`` before Lightning clips; under DeepSpeed it is the one
    DeepSpeed computed in its step and clipped with.
    """

    def __init__(self) -> None:
        self.grad_norms: list[float] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.grad_norms.append(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])).item())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if not isinstance(trainer.strategy, DeepSpeedStrategy):
            return
        engine = trainer.strategy.deepspeed_engine
        if engine.global_steps > len(self.grad_norms):  # DeepSpeed stepped on this batch
            self.grad_norms.append(float(engine.get_global_grad_norm()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        engine_steps = None
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            engine_steps = trainer.strategy.deepspeed_engine.global_steps
        record = {
            "global_step": trainer.global_step,
            "estimated_stepping_batches": trainer.estimated_stepping_batches,
            "engine_steps": engine_steps,
            "last_lr": trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0],
            "grad_norms": self.grad_norms,
        }
        path = Path(trainer.default_root_dir) / f"steps.{trainer.global_rank}.json"
        path.write_text(json.dumps(record, sort_keys=True))


class DumpPeakMemory(L.Callback):
    """Every rank writes its CUDA peak (bytes allocated) once the model is loaded and DeepSpeed has set
    up, before any forward, to ``<root dir>/peak.<global rank>.json``."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        peak = torch.cuda.max_memory_allocated(trainer.strategy.root_device)
        path = Path(trainer.default_root_dir) / f"peak.{trainer.global_rank}.json"
        path.write_text(json.dumps({"peak": peak}))
