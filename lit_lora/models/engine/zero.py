"""What DeepSpeed ZeRO changes for PeftModule: whole parameters to export, gradients for methods that
read them after the step (AdaLoRA)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from peft import PeftModel

from lit_lora.methods.base import ADAPTER, AdapterHooks


def is_partitioned(param: torch.Tensor) -> bool:
    """A parameter that ZeRO-3 split across ranks (DeepSpeed tags it with a ``ds_id``)."""
    return hasattr(param, "ds_id")


@contextmanager
def gathered_adapter(model: PeftModel) -> Iterator[None]:
    """Inside the block the adapter and trained heads are whole on every rank (changes are discarded on
    exit); a no-op unless ZeRO-3 partitioned them. Every rank must enter: the gather is a collective."""
    # Trainable ones, and the frozen ones PEFT saves too (a loaded adapter's weights, AdaLoRA's ranknum):
    # PEFT keys every adapter parameter by the adapter's name.
    saved = (p for n, p in model.named_parameters() if p.requires_grad or ADAPTER in n.split("."))
    partitioned = [p for p in saved if is_partitioned(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned):
        yield


class ZeroGradients:
    """The gradients a method reads after the step (``AdapterHooks.gradients_read``), under DeepSpeed
    ZeRO-1/2 as under DDP.

    AdaLoRA's allocator (PEFT) scores importance from ``param.grad`` after the optimizer step and masks
    singular values (lora_E) in place. DDP leaves the averaged gradients in ``.grad``. DeepSpeed
    reduces them into its partitions and frees them in its step, and keeps an fp32 master copy of the
    weights that its next step copies back over the module. So the full averaged gradients are
    gathered before the step (:meth:`capture`), shown as ``.grad`` while the method reads them
    (:meth:`exposed`), clipped as DeepSpeed clipped them in its step (DDP's allocator reads Lightning's
    clipped ``.grad``), and what the method edits in place (``AdapterHooks.edits_in_place``) is then
    written into the master copy. Every rank gets the same scores and rank pattern, step for step what
    DDP gives. Elsewhere both methods change nothing.
    """

    def __init__(self) -> None:
        self._grads: dict[str, torch.Tensor] | None = None

    def capture(self, hooks: AdapterHooks, strategy: Any) -> None:
        """From ``on_before_optimizer_step``: after backward and the gradient reduction, before the step."""
        if not isinstance(strategy, DeepSpeedStrategy):
            return
        if not strategy.deepspeed_engine.is_gradient_accumulation_boundary():
            return  # DeepSpeed steps at the end of an accumulation window only
        from deepspeed.utils import safe_get_full_grad

        # A collective: every rank asks for the same parameters in the same order.
        self._grads = {n: safe_get_full_grad(p).detach().clone() for n, p in hooks.gradients_read()}

    @contextmanager
    def exposed(self, hooks: AdapterHooks, strategy: Any) -> Iterator[bool]:
        """After the optimizer step: yields whether the method should read them for this step."""
        if not isinstance(strategy, DeepSpeedStrategy):
            yield True
            return
        if self._grads is None:  # inside an accumulation window: DeepSpeed did not step
            yield False
            return
        grads, self._grads = self._grads, None
        params = dict(hooks.gradients_read())
        clipped = _clip_coefficient(strategy.deepspeed_engine)
        for name, param in params.items():
            param.grad = (grads[name] * clipped).to(param.dtype)
        try:
            yield True
        finally:
            for param in params.values():
                param.grad = None
        from deepspeed.utils import safe_set_full_fp32_param

        for name, param in params.items():
            if hooks.edits_in_place(name):  # changed in the module's copy: the master copy follows
                safe_set_full_fp32_param(param, param.data.float())


def _clip_coefficient(engine: Any) -> float:
    """The factor DeepSpeed's step scaled the gradients by to clip them, 1 when it did not clip: its
    ``clip / (global norm + 1e-6)`` capped at 1, the factor of torch's ``clip_grad_norm_``."""
    threshold, norm = engine.gradient_clipping(), engine.get_global_grad_norm()
    if not threshold or norm is None:
        return 1.0
    return min(1.0, threshold / (float(norm) + 1e-6))
