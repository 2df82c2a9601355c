"""Callbacks that multi-process tests add from the command line (``--trainer.callbacks+=...``).

At the end of fit every rank saves what it trained (trainable tensors, for AdaLoRA the final rank
pattern, and the attention implementation the base ran) to ``$LIT_LORA_RANK_DUMP/rank<N>.pt``, so a
test can compare the ranks with each other.
``KillAtStep`` kills every rank mid-run, for the resume test; ``ShardProbe`` records what each rank holds.
"""

from __future__ import annotations

import json
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
        attention = getattr(model.get_base_model().config, "_attn_implementation", None)
        record = {"trained": trained, "rank_pattern": ranks, "attention": attention}
        torch.save(record, directory / f"rank{trainer.global_rank}.pt")


class KillAtStep(L.Callback):
    """Every rank dies like a preempted job, with no chance to clean up, after optimizer step
    ``$LIT_LORA_KILL_AT_STEP`` (before that step's checkpoint: Lightning runs checkpoint callbacks last)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == int(os.environ["LIT_LORA_KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)


class ShardProbe(L.Callback):
    """At the end of fit every rank writes ``shards<N>.json`` to ``$LIT_LORA_RANK_DUMP`` (else the
    default root dir): how many parameter elements the model has, how many this rank holds (FSDP2
    keeps a DTensor's local shard only), and the storage dtypes of 4-bit weights."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.distributed.tensor import DTensor

        params = list(pl_module.parameters())
        local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
        # 4-bit layers (bitsandbytes' Linear4bit): the dtype their packed weights are stored in.
        packed = {str(m.weight.dtype) for m in pl_module.modules() if type(m).__name__ == "Linear4bit"}
        record = {"numel": sum(p.numel() for p in params), "local": local, "packed_dtypes": sorted(packed)}
        directory = Path(os.environ.get("LIT_LORA_RANK_DUMP", trainer.default_root_dir))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"shards{trainer.global_rank}.json").write_text(json.dumps(record))
