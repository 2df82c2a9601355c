"""What every lit_lora LightningModule shares: building the PEFT model, optimisation, adapter-only state.

Task modules add a head-specific ``_build_kwargs``, steps and metrics; nothing else is inherited.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from peft import PeftModel, TaskType, prepare_model_for_kbit_training
from torch import nn

from lit_lora.core.hub import describe_model, load_config
from lit_lora.core.io import ADAPTER_EXPORT, atomic_directory
from lit_lora.core.quantization import Quantization
from lit_lora.core.ranges import NonNegativeFloat, PositiveFloat, Range, check_init_arguments
from lit_lora.data.sampler import is_padding_batch
from lit_lora.errors import LitLoraError
from lit_lora.methods import ADAPTER, AdapterHooks, LoraSpec, PeftMethod, method_of
from lit_lora.metrics.stages import StageMetrics
from lit_lora.models.engine.build import (
    head_module_names,
    keep_4bit_weights_trainable_layout,
    load_base_model,
    wrap_with_adapter,
)
from lit_lora.models.engine.checkpoint import (
    check_checkpoint_keys,
    restore_rng_states,
    save_rank_states,
    take_own_rank_state,
)
from lit_lora.models.engine.footprint import weight_footprint_bytes
from lit_lora.models.engine.fsdp import shard_if_asked, shards_model, whole_adapter_state
from lit_lora.models.engine.host_memory import trim_after_each_layer, warn_if_trim_has_no_effect
from lit_lora.models.engine.optim import configure as configure_optimization
from lit_lora.models.engine.resume import resume_train_loader_position, start_next_epoch
from lit_lora.models.engine.zero import ZeroGradients, gathered_adapter


class PeftModule(L.LightningModule):
    """A Hugging Face model with a PEFT adapter; the frozen base is built lazily in ``configure_model``.

    Building late lets AdaLoRA take its total step count from the trainer and lets the task read the
    number of labels from the datamodule, so neither is ever repeated in a config.
    """

    auto_model_class: ClassVar[Any]
    task_type: ClassVar[TaskType]
    metric_stages: ClassVar[tuple[str, ...]] = ("val", "test")
    stage_metrics: StageMetrics  # built with the model, from _new_metrics

    def __init__(
        self,
        model_name_or_path: str,
        adapter: PeftMethod | None = None,
        quantization: Quantization | None = None,
        adapter_path: str | None = None,
        learning_rate: PositiveFloat = 5e-4,
        weight_decay: NonNegativeFloat = 0.0,
        warmup_ratio: Annotated[float, Range(ge=0, lt=1)] = 0.06,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        gradient_checkpointing: bool = False,
        trim_host_memory: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        """
        Args:
            model_name_or_path: Hugging Face hub name or local directory of the base model.
            adapter: The PEFT method: LoraSpec (default), AdaLoraSpec or another in lit_lora.methods.
            quantization: Quantisation of the frozen base weights; nf4 with an adapter is QLoRA.
            adapter_path: A saved PEFT adapter directory to evaluate or predict with instead of a new adapter.
            learning_rate: Peak learning rate of the default AdamW, and the base of methods that set
                learning rates per parameter group (LoRA+).
            weight_decay: Weight decay of the default AdamW.
            warmup_ratio: Fraction of the optimizer steps spent in linear warm-up before linear decay.
            optimizer: Another optimizer, as class_path and init_args (e.g. torch.optim.SGD with its lr);
                None is AdamW (fused where safe) with learning_rate and weight_decay.
            lr_scheduler: Another LR schedule, stepped every optimizer step; None is linear warm-up over
                warmup_ratio of the steps, then linear decay to zero.
            gradient_checkpointing: Recompute activations in backward (non-reentrant) to save memory.
            trim_host_memory: On CPU, hand the memory each transformer layer frees back to the OS after
                its forward and its backward (glibc's malloc_trim), so peak RSS follows the live tensors
                instead of the heap glibc keeps; same numbers, some more step time. No effect (and a
                warning) on other devices or without glibc.
            trust_remote_code: Run model code shipped with a hub repository; off unless asked for, since
                that code runs with your permissions.
        """
        super().__init__()
        check_init_arguments(self, "model.")  # this class's and every subclass's: lit_lora/core/ranges.py
        self.model_name_or_path = model_name_or_path
        self.adapter = adapter if adapter is not None else LoraSpec()
        self.quantization = quantization if quantization is not None else Quantization()
        self.adapter_path = adapter_path
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.gradient_checkpointing = gradient_checkpointing
        self.trim_host_memory = trim_host_memory
        self.trust_remote_code = trust_remote_code
        self.model: PeftModel | None = None
        self._hooks: AdapterHooks | None = None  # the method's part in training, once the model is built
        self._zero_grads = ZeroGradients()  # gradients a method reads after the step, under DeepSpeed
        self._rng_states_to_restore: dict[str, Any] | None = None
        # Checkpoints hold adapter and head weights only, so loading one is never strict.
        self.strict_loading = False

    # ---- task hooks -------------------------------------------------------------------------------

    def _build_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` keyword arguments of the task (e.g. num_labels)."""
        return {}

    def _new_metrics(self, stage: str) -> dict[str, nn.Module]:
        """Fresh metric objects for ``stage`` (one of ``metric_stages``), by name.

        Called once per stage after the model is built (the number of labels may come from the
        datamodule); the objects live in ``self.stage_metrics[stage]``.
        """
        return {}

    def _add_task_modules(self, base: nn.Module) -> list[str]:
        """New modules the task attaches to the loaded base before PEFT wraps it, by attribute name.

        They are trained in full and saved with the adapter (PEFT's modules_to_save), so a saved adapter
        reloads them; the base must carry them before a saved adapter is loaded too.
        """
        return []

    def _trained_heads(self, config: Any) -> list[str]:
        """Modules trained in full and kept out of quantisation: by default the task head and pooler.

        Language models override this to return [] (their ``lm_head`` stays frozen).
        """
        return head_module_names(self.auto_model_class, config)

    def _eval_step(self, batch: Any, stage: str) -> None:
        """Score one batch for ``stage`` "val" or "test" (validation_step and test_step call it)."""
        raise NotImplementedError

    def _eval_epoch_end(self, stage: str) -> None:
        """Log what needs the whole split (perplexity, SQuAD decoding) at the end of "val" or "test".

        The stage's metrics are reset right after, by the caller.
        """

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if is_padding_batch(self.trainer.val_dataloaders, batch_idx):
            return self._padding_step(batch, "val")
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if is_padding_batch(self.trainer.test_dataloaders, batch_idx):
            return self._padding_step(batch, "test")
        self._eval_step(batch, "test")

    @property
    def _gathers_weights_in_every_forward(self) -> bool:
        """ZeRO-3 on several ranks: every forward pass needs every rank, in the same order."""
        trainer = self._trainer  # None when called outside a Trainer (a notebook, a test)
        if trainer is None:
            return False
        strategy = trainer.strategy
        sharded = getattr(strategy, "zero_stage_3", False) or getattr(
            strategy, "gathers_weights_in_every_forward", False
        )
        return sharded and trainer.world_size > 1

    def _padding_step(self, batch: Any, stage: str) -> None:
        # Scored by no metric. Under ZeRO-3 it still runs every forward a real batch runs (a decoder's
        # evaluation runs several), or the other ranks would wait for it in their weight gathers.
        if self._gathers_weights_in_every_forward:
            with self.stage_metrics.discarded(stage, self.device):
                self._eval_step(batch, stage)

    # An epoch cut short (an exception mid-validation) leaves states behind: clear them on the way in too.
    def on_validation_epoch_start(self) -> None:
        self.stage_metrics.reset("val")

    def on_test_epoch_start(self) -> None:
        self.stage_metrics.reset("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")
        self.stage_metrics.reset("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
        self.stage_metrics.reset("test")

    # ---- model construction -----------------------------------------------------------------------

    @property
    def _strategy(self) -> Any:
        return self._trainer.strategy if self._trainer is not None else None

    @property
    def _root_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _total_training_steps(self) -> int | None:
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return None
        steps = trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise LitLoraError(
                "trainer.max_steps or trainer.max_epochs must be set: the schedule needs a length"
            )
        return int(steps)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.quantization.enabled and self.adapter_path is None:
            self.adapter.check_quantization(self.quantization)  # before the slow part
        auto_cls = self.auto_model_class
        config = load_config(
            self.model_name_or_path, trust_remote_code=self.trust_remote_code, **self._build_kwargs()
        )
        self._check_max_length(config)
        heads = self._trained_heads(config)
        with self._loading_context():
            base = load_base_model(
                auto_cls, self.model_name_or_path, config, self.quantization, self._root_device, heads,
                trust_remote_code=self.trust_remote_code, shardable=shards_model(self._strategy),
            )  # fmt: skip
            heads = heads + self._add_task_modules(base)
            if self.quantization.enabled:
                keep_4bit_weights_trainable_layout(base)
                # Positional: the checkpointing kwargs' keyword is gradient_checkpointing_kwargs before
                # PEFT 0.22 and activation_checkpointing_kwargs after (the old one warns).
                non_reentrant = {"use_reentrant": False}
                base = prepare_model_for_kbit_training(base, self.gradient_checkpointing, non_reentrant)
            elif self.gradient_checkpointing:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model = wrap_with_adapter(
                base, self.adapter, self.task_type, heads, self._total_training_steps(), self.adapter_path
            )
        if self.adapter_path is None:
            # PEFT records the folder the weights came from; a hub name resolved offline to a packaged or
            # cached copy would then name a path of this machine. Saved adapters name what the user gave.
            self.model.peft_config[ADAPTER].base_model_name_or_path = self.model_name_or_path
            self._hooks = self.adapter.hooks(self.model)
        else:  # a saved adapter, frozen: described by the method that recognises its config
            self._hooks = AdapterHooks(self.model, method_of(self.model.peft_config["default"]))
        # from_pretrained returns eval mode; Lightning keeps whatever mode it finds, and dropout
        # (base and adapter) belongs to training.
        self.model.train()
        if self.trim_host_memory:
            trim_after_each_layer(self.model)
        # Last: building the method's hooks above may read whole weights.
        shard_if_asked(self.model, self._strategy)
        self.stage_metrics = StageMetrics(self._new_metrics, self.metric_stages)

    def _loading_context(self) -> AbstractContextManager[None]:
        """Where the strategy wants the base loaded and wrapped (LitLoraDeepSpeed: partitioned at load
        under ZeRO-3 on CUDA); elsewhere nothing changes."""
        return getattr(self._strategy, "partitioned_loading", nullcontext)()

    def _check_max_length(self, config: Any) -> None:
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        wanted = getattr(datamodule, "max_length", None)
        positions = getattr(config, "max_position_embeddings", None)
        if isinstance(wanted, int) and isinstance(positions, int) and wanted > positions:
            raise LitLoraError(
                f"data.max_length={wanted} exceeds the {positions} positions of model "
                f"{self.model_name_or_path} (max_position_embeddings); use data.max_length <= {positions}"
            )

    @property
    def peft_model(self) -> PeftModel:
        if self.model is None:
            self.configure_model()
        assert self.model is not None
        return self.model

    @property
    def method_hooks(self) -> AdapterHooks:
        """What the adapter's method does during training, export and description (builds the model)."""
        self.peft_model  # noqa: B018 - builds the model, and with it the hooks
        assert self._hooks is not None
        return self._hooks

    def parameter_counts(self) -> dict[str, int | float]:
        trainable, total = self.peft_model.get_nb_trainable_parameters()
        return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / total}

    # ---- optimisation -----------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        groups = self.adapter.param_groups(self.peft_model, self.learning_rate, self.weight_decay)
        params = [p for group in groups for p in group["params"]]
        if not params:
            raise LitLoraError("nothing to train: model.adapter_path loads a frozen adapter; drop it for fit")
        return configure_optimization(
            self.trainer, groups, self.optimizer, self.lr_scheduler,
            self.learning_rate, self.weight_decay, self.warmup_ratio,
        )  # fmt: skip

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Called once per real optimizer step (after gradient accumulation) while gradients still
        # exist: AdaLoRA scores importance from them and reallocates the rank budget.
        hooks = self.method_hooks
        if hooks.reads_gradients_after_step:
            exposed = self._zero_grads.exposed(hooks, self.trainer.strategy)
        else:
            exposed = nullcontext(True)
        with exposed as stepped:
            if stepped:
                for key, value in hooks.after_optimizer_step(self.trainer.global_step).items():
                    self.log(key, value)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self.method_hooks.reads_gradients_after_step:  # DeepSpeed frees them in its step: keep them
            self._zero_grads.capture(self.method_hooks, self.trainer.strategy)

    def on_fit_start(self) -> None:
        total = self._total_training_steps()
        assert total is not None
        self.method_hooks.on_fit_start(total)
        warn_if_trim_has_no_effect(self.trim_host_memory, self.model, self.device)

    def on_train_start(self) -> None:
        starts_next_epoch = resume_train_loader_position(self.trainer)
        rng, self._rng_states_to_restore = self._rng_states_to_restore, None
        if rng is not None:
            restore_rng_states(rng)
        if starts_next_epoch:
            start_next_epoch(self.trainer)
        counts = {f"params/{k}": float(v) for k, v in self.parameter_counts().items()}
        for logger in self.loggers:  # every tracker, not just the first (CSV) logger
            logger.log_metrics(counts, step=0)

    # ---- adapter-only state -----------------------------------------------------------------------

    def _adapter_keys(self) -> set[str]:
        trainable = {f"model.{n}" for n, p in self.peft_model.named_parameters() if p.requires_grad}
        # PEFT keys every adapter's modules and buffers by adapter name (VeRA's shared projections too).
        buffers = self.peft_model.named_buffers()
        adapter_buffers = {f"model.{n}" for n, _ in buffers if ADAPTER in n.split(".")}
        return trainable | adapter_buffers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self._adapter_keys()
        if "state_dict" in checkpoint:  # DeepSpeed saves module states itself
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        save_rank_states(checkpoint)  # a collective: Lightning calls this hook on every rank
        state = self.method_hooks.state_dict()
        if state is not None:  # under the method's name, as AdaLoRA's has always been saved
            checkpoint[self.adapter.method] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.configure_model()
        if "state_dict" in checkpoint:
            check_checkpoint_keys(checkpoint["state_dict"], self.state_dict(), self._adapter_keys())
        if self.adapter_path is None and self.adapter.method in checkpoint:
            self.method_hooks.load_state_dict(checkpoint[self.adapter.method])
        # Only fit resumes a run's state; validate and test take the weights from any checkpoint.
        if self._trainer is not None and self.trainer.state.fn == "fit":
            # Applied when training starts: creating the resumed loader's iterator draws from the RNG.
            self._rng_states_to_restore = take_own_rank_state(checkpoint)

    def save_adapter(self, directory: str | Path) -> Path:
        """Export the adapter (and trained heads) in PEFT format, atomically.

        Under a distributed trainer every rank calls this (ZeRO-3 and FSDP2 gather the weights first)
        and rank zero writes.
        """
        with gathered_adapter(self.peft_model):
            whole = whole_adapter_state(self.peft_model)
            if self._trainer is None or self.trainer.is_global_zero:
                with atomic_directory(directory, ADAPTER_EXPORT) as tmp:
                    self.method_hooks.save(tmp, whole)
        return Path(directory)

    def describe(self) -> dict[str, Any]:
        """What the results record says about the model and adapter."""
        hooks = self.method_hooks
        config = hooks.config
        return {
            "model": self.model_name_or_path,
            # Weights that differ from the hub release say so (the packaged SmolLM2 is dequantised Q4_1).
            "model_weights": describe_model(self.model_name_or_path),
            "quantization": self.quantization.mode,
            "double_quant": self.quantization.double_quant if self.quantization.enabled else None,
            "target_modules": sorted(config.target_modules) if config.target_modules else None,
            **hooks.describe(),  # method, its label, ranks
            "parameters": {**self.parameter_counts(), **hooks.extra_parameter_counts()},
            # The weights alone (frozen base as stored, adapters, quantisation constants): what NF4
            # or int8 saves, which a process peak dominated by activations and the runtime hides.
            "weight_memory_mb": round(weight_footprint_bytes(self.peft_model) / 2**20, 2),
        }
