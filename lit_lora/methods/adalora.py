"""AdaLoRA (Zhang et al., 2023): its spec and its rank allocation (schedule, per-step allocator,
checkpoint state, the parameter count at the final budget)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from peft import AdaLoraConfig, PeftConfig, PeftModel, TaskType

from lit_lora.core.ranges import DropoutRate, NonNegativeFloat, PositiveFloat, PositiveInt, Range
from lit_lora.errors import LitLoraError
from lit_lora.methods.base import ADAPTER, AdapterHooks, PeftMethod, trainable_device

_STATE = ("ipt", "exp_avg_ipt", "exp_avg_unc")
_PREFIX = "base_model.model."


@dataclass
class AdaLoraSpec(PeftMethod):
    """AdaLoRA (Zhang et al., 2023): SVD-shaped updates whose ranks are reallocated during training.

    The total number of optimizer steps is taken from the trainer; it is never asked of the user.
    """

    init_r: PositiveInt = 12
    """Initial rank of every adapted module."""
    target_r: PositiveInt = 8
    """Average rank after reallocation: the final budget is target_r x number of adapted modules."""
    tinit: Annotated[int | float, Range(ge=0)] = 0.1
    """Warm-up before any rank is pruned: a step count, or a fraction of all steps when below 1."""
    tfinal: Annotated[int | float, Range(ge=0)] = 0.2
    """Final phase training the fixed rank pattern: a step count, or a fraction of all steps below 1."""
    delta_t: PositiveInt = 1
    """Steps between two budget reallocations."""
    beta1: Annotated[float, Range(ge=0, lt=1)] = 0.85
    """EMA coefficient of the importance (sensitivity) estimate."""
    beta2: Annotated[float, Range(ge=0, lt=1)] = 0.85
    """EMA coefficient of the importance uncertainty."""
    orth_reg_weight: NonNegativeFloat = 0.1
    """Weight of the orthogonality regulariser on P and Q; PEFT's 0.5 swamps the task loss early on."""
    alpha: PositiveFloat = 32.0
    """Scaling numerator of the updates."""
    dropout: DropoutRate = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Module name suffixes to adapt; None uses PEFT's default for the architecture."""

    method: ClassVar[str] = "adalora"
    label: ClassVar[str] = "AdaLoRA"
    # PEFT's AdaLoRA reads its partitioned matrices outside any module's forward, where ZeRO-3 never
    # gathers them (PEFT relies on transformers' own DeepSpeed integration for that).
    supports_zero3: ClassVar[bool] = False
    # Its allocator ranks importance over whole gradients and masks whole singular-value vectors in
    # place; FSDP2 holds each rank's shard of both (and of orth_reg's matrices) only.
    supports_fsdp: ClassVar[bool] = False

    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        if self.target_r > self.init_r:
            raise LitLoraError(
                f"model.adapter.target_r={self.target_r} exceeds model.adapter.init_r={self.init_r}: "
                "AdaLoRA only prunes ranks"
            )
        if total_steps is None:  # built outside fit: a placeholder; every fit sets its own schedule
            total_steps, tinit, tfinal = 2, 0, 0
        else:
            tinit, tfinal = self.phases(total_steps)
        return AdaLoraConfig(
            task_type=task_type,
            init_r=self.init_r,
            target_r=self.target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.delta_t,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight,
            total_step=total_steps,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            modules_to_save=modules_to_save or None,
        )

    def phases(self, total_steps: int) -> tuple[int, int]:
        """(tinit, tfinal) in optimizer steps for a run of ``total_steps``."""
        tinit, tfinal = _steps(self.tinit, total_steps), _steps(self.tfinal, total_steps)
        if tinit + tfinal >= total_steps:
            raise LitLoraError(
                f"model.adapter.tinit + model.adapter.tfinal = {tinit + tfinal} steps leaves no "
                f"budgeting phase in {total_steps} optimizer steps; their sum must be smaller"
            )
        return tinit, tfinal

    def hooks(self, model: PeftModel) -> RankAllocation:
        return RankAllocation(model, self)

    @classmethod
    def recognises(cls, config: PeftConfig) -> bool:
        return config.peft_type.value == "ADALORA"

    @classmethod
    def describe_config(cls, config: PeftConfig) -> dict[str, Any]:
        pattern = config.rank_pattern or {}  # a saved adapter's final pattern is in its config
        return {
            "ranks": {"init_r": config.init_r, "target_r": config.target_r},
            "rank_pattern": {k: int(sum(v)) for k, v in pattern.items()},
        }

    @classmethod
    def prepare_loaded(cls, model: PeftModel) -> None:
        if not hasattr(model.base_model, "trainable_adapter_name"):
            # PEFT's AdaLoRA forward reads it whenever labels produce a loss but sets it only for a
            # trainable adapter: without it a saved AdaLoRA adapter cannot be scored.
            model.base_model.trainable_adapter_name = ADAPTER


class RankAllocation(AdapterHooks):
    """Drives PEFT's ``update_and_allocate`` for the adapter ``"default"`` of ``model``."""

    reads_gradients_after_step = True
    extra_loss_name = "orth_reg"  # PEFT adds the orthogonality regulariser when labels go in

    def __init__(self, model: PeftModel, spec: AdaLoraSpec) -> None:
        super().__init__(model, type(spec))
        self.spec = spec
        self.skipped_steps = 0

    @property
    def _allocator(self) -> Any:
        return self.model.base_model.rankallocator

    def on_fit_start(self, total_steps: int) -> None:
        self.reschedule(total_steps)

    def reschedule(self, total_steps: int) -> None:
        """Fit the schedule to this fit's length, whatever built the model earlier.

        Building the model outside ``fit`` (a parameter count, ``validate`` first, a tuner) fixes a
        placeholder schedule; left alone, the whole allocation would be over after two steps.
        """
        tinit, tfinal = self.spec.phases(total_steps)
        self.config.total_step, self.config.tinit, self.config.tfinal = total_steps, tinit, tfinal

    def after_optimizer_step(self, global_step: int) -> dict[str, float]:
        if self.step(global_step):
            return {}
        return {"train/adalora_skipped_steps": float(self.skipped_steps)}

    def step(self, global_step: int) -> bool:
        """Score importance and reallocate ranks after an optimizer step; skip steps with inf/NaN grads.

        Under ``16-mixed`` the grad scaler skips an overflowing step, but the allocator would still read
        its gradients and its importance averages would stay non-finite for good.
        """
        grads = [p.grad for n, p in self.model.named_parameters() if ".lora_" in n and p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            self.skipped_steps += 1
            return False
        self.model.base_model.update_and_allocate(global_step)
        return True

    # ---- checkpoints ------------------------------------------------------------------------------

    def gradients_read(self) -> list[tuple[str, torch.nn.Parameter]]:
        # The allocator scores lora_A, lora_E and lora_B from their gradients.
        return [(n, p) for n, p in self.model.named_parameters() if ".lora_" in n and p.requires_grad]

    def edits_in_place(self, name: str) -> bool:
        return ".lora_E." in name  # the singular values the allocator masks

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self._allocator, name) for name in _STATE}
        return {"rank_pattern": self.config.rank_pattern, "skipped_steps": self.skipped_steps, **state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.config.rank_pattern = state["rank_pattern"]
        self.skipped_steps = state.get("skipped_steps", 0)
        # The checkpoint loader maps tensors to CPU; the allocator mixes them with its parameters' grads.
        device = trainable_device(self.model)
        for name in _STATE:
            setattr(self._allocator, name, {k: v.to(device) for k, v in state[name].items()})

    # ---- what the results record says ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "skipped_allocation_steps": self.skipped_steps}

    def extra_parameter_counts(self) -> dict[str, int | None]:
        # Beside the count at init_r: what the final rank budget keeps.
        return {"trainable_at_final_budget": self.trainable_at_final_budget()}

    def trainable_at_final_budget(self) -> int | None:
        """Trainable parameters counting only the ranks the budget kept (None before any allocation).

        Pruned ranks stay in memory as masked rows, so the plain count still reports ``init_r``.
        """
        pattern = self.config.rank_pattern
        if not pattern:
            return None
        total = 0
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            key = re.sub(r"lora_[ABE]", "lora_E", name.removeprefix(_PREFIX))
            if ".lora_" not in name or key not in pattern:
                total += param.numel()
                continue
            kept = int(sum(pattern[key]))
            total += param.numel() // param.shape[0 if ".lora_A" in name or ".lora_E" in name else 1] * kept
        return total


def _steps(value: int | float, total_steps: int) -> int:
    """A step count as given, or a fraction (below 1) of ``total_steps`` (never negative: _ranges.py)."""
    return round(value * total_steps) if isinstance(value, float) and value < 1 else int(value)
