"""AdaLoRA's rank allocation in one place: its schedule, the per-step allocator, its checkpoint state and
the parameter count at the final budget. ``PeftModule`` calls these and knows nothing else of AdaLoRA."""

from __future__ import annotations

import re
from typing import Any

import torch
from peft import PeftModel

from lit_lora.adapters import AdaLoraSpec

_STATE = ("ipt", "exp_avg_ipt", "exp_avg_unc")
_PREFIX = "base_model.model."


class RankAllocation:
    """Drives PEFT's ``update_and_allocate`` for the adapter ``"default"`` of ``model``."""

    def __init__(self, model: PeftModel, spec: AdaLoraSpec) -> None:
        self.model = model
        self.spec = spec
        self.skipped_steps = 0

    @property
    def config(self) -> Any:
        return self.model.peft_config["default"]

    @property
    def _allocator(self) -> Any:
        return self.model.base_model.rankallocator

    def reschedule(self, total_steps: int) -> None:
        """Fit the schedule to this fit's length, whatever built the model earlier.

        Building the model outside ``fit`` (a parameter count, ``validate`` first, a tuner) fixes a
        placeholder schedule; left alone, the whole allocation would be over after two steps.
        """
        tinit, tfinal = self.spec.phases(total_steps)
        self.config.total_step, self.config.tinit, self.config.tfinal = total_steps, tinit, tfinal

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

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self._allocator, name) for name in _STATE}
        return {"rank_pattern": self.config.rank_pattern, "skipped_steps": self.skipped_steps, **state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.config.rank_pattern = state["rank_pattern"]
        self.skipped_steps = state.get("skipped_steps", 0)
        # The checkpoint loader maps tensors to CPU; the allocator mixes them with its parameters' grads.
        device = next(p.device for p in self.model.parameters() if p.requires_grad)
        for name in _STATE:
            setattr(self._allocator, name, {k: v.to(device) for k, v in state[name].items()})

    # ---- what the results record says ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        pattern = self.config.rank_pattern or {}
        return {
            "ranks": {"init_r": self.config.init_r, "target_r": self.config.target_r},
            "rank_pattern": {k: int(sum(v)) for k, v in pattern.items()},
            "skipped_allocation_steps": self.skipped_steps,
        }

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
