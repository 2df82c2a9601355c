"""DeepSpeed ZeRO-2/3 that runs on CPU processes as well as on CUDA GPUs, from the same YAML.

Lightning's ``DeepSpeedStrategy`` refuses a CPU accelerator in three places although DeepSpeed runs
ZeRO on CPU over gloo; :class:`LitLoraDeepSpeed` lifts them when Lightning's accelerator is the CPU and
otherwise defers to Lightning. On every device it also: saves adapter-only checkpoints, lets torch's
AdamW run on offloaded optimizer states, accumulates gradients exactly as Lightning does under DDP, and
refuses, before any rank starts, the module/ZeRO combinations that cannot train; on CUDA it partitions
the base at load under ZeRO-3. It overrides private Lightning methods, hence the ``lightning`` version
range pinned in pyproject.toml.

    trainer:
      strategy:
        class_path: lit_lora.runtime.strategies.LitLoraDeepSpeed
        init_args: {stage: 3}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.trainer.states import TrainerFn

from lit_lora.errors import LitLoraError


class LitLoraDeepSpeed(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy, on CUDA GPUs or CPU processes; checkpoints hold no frozen weights."""

    def __init__(
        self,
        *args: Any,
        exclude_frozen_parameters: bool = True,
        param_persistence_threshold: int | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            exclude_frozen_parameters: Leave the frozen base out of checkpoints (adapter and heads only).
            param_persistence_threshold: ZeRO-3: parameters with fewer elements stay whole on every rank
                (DeepSpeed's ``stage3_param_persistence_threshold``, default 1e5); 0 partitions them all.
        """
        super().__init__(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        assert self.config is not None
        if param_persistence_threshold is not None:
            zero = self.config.setdefault("zero_optimization", {})
            zero["stage3_param_persistence_threshold"] = param_persistence_threshold
        if (self.config.get("zero_optimization") or {}).get("offload_param") and self.zero_stage != 3:
            # DeepSpeed would silently keep the parameters where they are.
            raise LitLoraError(
                f"trainer.strategy.offload_parameters=true needs stage 3, not {self.zero_stage}: DeepSpeed "
                "offloads parameters at ZeRO-3 only; use --config configs/extras/deepspeed_zero3.yaml"
            )
        # lit_lora's optimizer is torch's AdamW; with offload DeepSpeed would otherwise insist on its own
        # DeepSpeedCPUAdam, a C++ extension compiled at first use (minutes, and a compiler on the host).
        self.config.setdefault("zero_force_ds_cpu_optimizer", False)

    @property
    def on_cpu(self) -> bool:
        return isinstance(self.accelerator, CPUAccelerator)

    @property
    def zero_stage(self) -> int:
        assert self.config is not None
        return int((self.config.get("zero_optimization") or {}).get("stage", 0))

    # ---- the three CPU refusals of Lightning's strategy ---------------------------------------------

    def setup_environment(self) -> None:
        if not self.on_cpu:
            super().setup_environment()
            return
        _use_deepspeed_cpu_accelerator()
        # Skip DeepSpeedStrategy's CUDA check, keep what DDPStrategy does (accelerator setup, distributed).
        super(DeepSpeedStrategy, self).setup_environment()

    def setup_distributed(self) -> None:
        if not self.on_cpu:
            super().setup_distributed()
            return
        # Lightning checks CUDA device indices here; CPU processes have none.
        reset_seed()
        self.set_world_ranks()
        _skip_shared_memory_op_build()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model: Any, optimizer: Any, lr_scheduler: Any = None) -> Any:
        with self._device_rank_for_deepspeed():
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)

    def _initialize_deepspeed_inference(self, model: Any) -> None:
        with self._device_rank_for_deepspeed():
            super()._initialize_deepspeed_inference(model)

    @contextmanager
    def _device_rank_for_deepspeed(self) -> Iterator[None]:
        """Lightning passes ``root_device.index`` as DeepSpeed's device rank: None on CPU, where the
        local rank is what DeepSpeed expects."""
        if not self.on_cpu:
            yield
            return
        import deepspeed

        initialize = deepspeed.initialize

        def with_local_rank(*args: Any, **kwargs: Any) -> Any:
            kwargs["args"] = argparse.Namespace(device_rank=self.local_rank)
            return initialize(*args, **kwargs)

        deepspeed.initialize = with_local_rank
        try:
            yield
        finally:
            deepspeed.initialize = initialize

    def _auto_select_batch_size(self) -> int:
        # Lightning reads the training loader for this even to validate or test, when lit_lora's data
        # module has no training split set up; DeepSpeed only logs throughput with it.
        assert self.lightning_module is not None
        if self.lightning_module.trainer.state.fn != TrainerFn.FITTING:
            return 1
        return super()._auto_select_batch_size()

    @contextmanager
    def model_sharded_context(self) -> Iterator[None]:
        # Lightning builds the model inside deepspeed.zero.Init under ZeRO-3, which splits every tensor as
        # it is created: transformers' from_pretrained then fills slices it cannot see. lit_lora partitions
        # the base where it loads it instead (partitioned_loading).
        yield

    @contextmanager
    def partitioned_loading(self) -> Iterator[None]:
        """Around loading the frozen base and wrapping it with the adapter (``PeftModule.configure_model``).

        ZeRO-3 on CUDA: transformers' own DeepSpeed integration (``HfDeepSpeedConfig``) builds the base
        inside ``zero.Init`` and loads each weight into its partitions, and PEFT gathers what its
        initialisation reads, so no GPU ever holds the whole model. On CPU processes, as before, each rank
        loads the base whole into its RAM and deepspeed.initialize partitions it.
        """
        if self.on_cpu or self.zero_stage != 3:
            yield
            return
        from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

        self._init_config_if_needed()
        # transformers keeps only a weak reference: the object lives for the block, and the integration
        # is off again after it (generation, for one, would otherwise behave differently).
        hf_config = HfDeepSpeedConfig(self.config)
        try:
            yield
        finally:
            unset_hf_deepspeed_config()
            del hf_config

    # ---- gradient accumulation: Lightning's windows, Lightning's loss scaling ---------------------------

    @property
    def handles_gradient_accumulation(self) -> bool:
        # Lightning's loop then ends a window every k batches and at an epoch's last batch, stepping the
        # optimizer and the schedule there as under DDP (estimated_stepping_batches counts those steps).
        # DeepSpeed's own count of micro-batches runs across epochs and would step elsewhere.
        return False

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        # Before the forward, as DeepSpeed asks: whether this micro-batch's backward ends the window
        # (then DeepSpeed reduces, and Lightning calls its step, right after).
        trainer = self.lightning_module.trainer
        self.deepspeed_engine.set_gradient_accumulation_boundary(not trainer.fit_loop._should_accumulate())
        return super().training_step(*args, **kwargs)

    @contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        # Lightning would enter the engine's no_sync(), which ZeRO-2/3 refuse: inside a window DeepSpeed
        # already reduces as its stage needs, given the boundary set in training_step.
        yield

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Lightning has divided the loss by accumulate_grad_batches already; DeepSpeed's backward would
        # divide it by the same count again (scale_wrt_gas), leaving gradients k times too small.
        kwargs.setdefault("scale_wrt_gas", False)
        return super().backward(closure_loss, optimizer, *args, **kwargs)

    # ---- refusing what cannot work before any rank starts -------------------------------------------

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = CheckingLauncher(self, self._launcher)

    def check_supported(self, module: L.LightningModule | None) -> None:
        """One line naming the combination when the module cannot train under this strategy."""
        stage = self.zero_stage
        adapter = getattr(module, "adapter", None)
        if stage == 3 and not getattr(adapter, "supports_zero3", True):
            raise LitLoraError(
                f"model.adapter={type(adapter).__name__} with DeepSpeed ZeRO-3 is not supported; use ZeRO-2: "
                "--config configs/extras/deepspeed_zero2.yaml"
            )
        quantization = getattr(module, "quantization", None)
        if quantization is None or not quantization.enabled:
            return
        mode = quantization.mode
        if self.on_cpu:
            raise LitLoraError(
                f"model.quantization.mode={mode} with DeepSpeed ZeRO-{stage} on CPU is not supported "
                "(bitsandbytes layers and DeepSpeed meet on CUDA only); on CPU train the quantised model "
                "with trainer.strategy=ddp or one device"
            )
        if stage == 3:
            raise LitLoraError(
                f"model.quantization.mode={mode} with DeepSpeed ZeRO-3 is not supported by lit_lora "
                "(it needs bnb_4bit_quant_storage equal to the model dtype); use ZeRO-2: "
                "--config configs/extras/deepspeed_zero2.yaml"
            )


class CheckingLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher that lets the strategy refuse the module before the other ranks start
    (``strategy.check_supported``: LitLoraDeepSpeed, LitLoraFSDP2)."""

    def __init__(self, strategy: Any, launcher: _SubprocessScriptLauncher) -> None:
        super().__init__(launcher.cluster_environment, launcher.num_processes, launcher.num_nodes)
        self._strategy = strategy

    def launch(self, function: Any, *args: Any, trainer: L.Trainer | None = None, **kwargs: Any) -> Any:
        self._strategy.check_supported(trainer.lightning_module if trainer is not None else None)
        return super().launch(function, *args, trainer=trainer, **kwargs)


def _use_deepspeed_cpu_accelerator() -> None:
    """DeepSpeed picks CUDA when it sees a GPU; Lightning's accelerator is CPU, so DeepSpeed's must be too."""
    from deepspeed.accelerator import get_accelerator, set_accelerator

    if get_accelerator().device_name() != "cpu":
        from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

        set_accelerator(CPU_Accelerator())


def _skip_shared_memory_op_build() -> None:
    """``deepspeed.init_distributed`` compiles a shared-memory all-reduce for CPU (~90 s the first time,
    and a compiler on the host); gloo does the same job for lit_lora's adapter-sized tensors."""
    import deepspeed.comm  # noqa: F401  (loads deepspeed.comm.torch)

    # By name: `import deepspeed.comm.torch as x` would bind the real `torch` package.
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
