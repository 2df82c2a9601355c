"""FSDP2 through Lightning: ``ModelParallelStrategy`` with every parameter sharded across all ranks.

    trainer:
      strategy:
        class_path: lit_lora.runtime.fsdp.LitLoraFSDP2

Every transformer block (the classes a Hugging Face model lists in ``_no_split_modules``) becomes one
FSDP2 unit and the Hugging Face model the root, so each forward, generation's included, gathers one
block at a time. Frozen base and adapter weights share the units; only trainable ones get gradients.
Runs on CUDA GPUs and on CPU processes (gloo). Checkpoints are one file written by rank zero that holds
the trainable weights only (gathered whole, never the frozen base); pairs that cannot train under FSDP2
are refused in one line before any rank starts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn

from lit_lora.errors import LitLoraError
from lit_lora.methods import METHODS
from lit_lora.runtime.strategies import CheckingLauncher

NAME = "FSDP2 (lit_lora.runtime.fsdp.LitLoraFSDP2)"


class LitLoraFSDP2(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy as plain FSDP2: data parallel over every rank, no tensor parallel."""

    # lit_lora's evaluation keeps every rank in every forward (padding batches, generation), as ZeRO-3.
    gathers_weights_in_every_forward = True

    def __init__(
        self, process_group_backend: str | None = None, timeout: timedelta | None = default_pg_timeout
    ) -> None:
        """
        Args:
            process_group_backend: torch.distributed backend; None is nccl on CUDA, gloo on CPU.
            timeout: How long a collective waits for the other ranks.
        """
        # Checkpoints are built here (trainable weights gathered whole), one file written by rank zero.
        super().__init__(
            save_distributed_checkpoint=False, process_group_backend=process_group_backend, timeout=timeout
        )

    @property
    def on_cpu(self) -> bool:
        return isinstance(self.accelerator, CPUAccelerator)

    def setup_environment(self) -> None:
        # Lightning's "auto" sizes would make each node's processes one tensor-parallel group.
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        if self.lightning_module is not None:  # started by torchrun or by hand: no launcher checked it
            self.check_supported(self.lightning_module)
        super().setup_environment()

    def shard_model(self, model: nn.Module) -> None:
        """Shard ``model`` (a PEFT model) in place: one FSDP2 unit per transformer block, the Hugging Face
        model the root. Called by the module once it is built, before Lightning sets it up."""
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        hf_model = _hugging_face_model(model)
        blocks = set(getattr(hf_model, "_no_split_modules", None) or [])
        units = [m for m in hf_model.modules() if type(m).__name__ in blocks]
        if not units:
            raise LitLoraError(
                f"trainer.strategy={NAME}: model {type(hf_model).__name__} names no transformer block "
                "(_no_split_modules) to shard by; use trainer.strategy=ddp or a DeepSpeed config"
            )
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(hf_model, mesh=mesh)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """Trainable weights gathered whole and every buffer, on every rank (a collective): what
        checkpoints keep (the module trims it to the adapter); the frozen base is never gathered."""
        assert self.model is not None
        state: dict[str, Any] = {}
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        buffers = {name for name, _ in self.model.named_buffers()}
        for name, tensor in self.model.state_dict().items():
            if name in trainable or name in buffers:
                state[name] = _whole(tensor).detach().cpu()
        return state

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = CheckingLauncher(self, self._launcher)

    def check_supported(self, module: L.LightningModule | None) -> None:
        """One line naming the combination when the module cannot train under FSDP2."""
        adapter = getattr(module, "adapter", None)
        if adapter is not None and not getattr(adapter, "supports_fsdp", True):
            allowed = ", ".join(m.__name__ for m in METHODS if m.supports_fsdp)
            raise LitLoraError(
                f"model.adapter={type(adapter).__name__} with trainer.strategy={NAME} is not supported "
                f"(allowed: {allowed}); use trainer.strategy=ddp or "
                "--config configs/extras/deepspeed_zero2.yaml"
            )
        quantization = getattr(module, "quantization", None)
        if quantization is None or not quantization.enabled:
            return
        mode = quantization.mode
        if self.on_cpu or mode == "int8":
            where = "on CPU" if self.on_cpu else "(8-bit weights do not shard)"
            raise LitLoraError(
                f"model.quantization.mode={mode} with trainer.strategy={NAME} {where} is not supported; "
                "allowed: mode nf4/fp4 on CUDA, or trainer.strategy=ddp"
            )


def _hugging_face_model(model: nn.Module) -> nn.Module:
    """The outermost transformers model (under PEFT's wrappers): the root unit."""
    from transformers import PreTrainedModel

    # Not by attribute: PEFT's wrappers forward unknown attributes to the model they wrap.
    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), model)


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (all ranks must ask, in the same order); any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
