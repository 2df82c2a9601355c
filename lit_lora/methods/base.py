"""What a PEFT method is to lit_lora: a spec that builds PEFT's config, and the hooks a training run calls.

``PeftModule`` and the task modules only call these; they never ask which method they hold. A method
is one file in this package (a :class:`PeftMethod` dataclass, plus an :class:`AdapterHooks` subclass
when it acts during training); ``lit_lora.methods`` finds it there and registers it in ``METHODS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from peft import PeftConfig, PeftModel, TaskType

if TYPE_CHECKING:
    from lit_lora.core.quantization import Quantization

ADAPTER = "default"  # the adapter name PEFT gives a single adapter


class PeftMethod(ABC):
    """What every adapter method spec provides. Abstract, so that jsonargparse parses ``model.adapter``
    by ``class_path`` and a command-line override such as ``--model.adapter.dropout 0`` changes the
    configured spec's field instead of re-picking the first spec whose fields accept the value."""

    method: ClassVar[str]
    """Short name recorded in results.json (``lora``, ``adalora``, ...)."""
    label: ClassVar[str]
    """Name the report shows (``LoRA``, ``AdaLoRA``, ...)."""
    supports_zero3: ClassVar[bool] = True
    """False when the method cannot train under DeepSpeed ZeRO-3."""
    supports_fsdp: ClassVar[bool] = True
    """False when the method cannot train under FSDP2 (lit_lora.runtime.fsdp)."""
    target_modules: list[str] | None

    @abstractmethod
    def to_peft_config(
        self, task_type: TaskType, modules_to_save: list[str], total_steps: int | None
    ) -> PeftConfig:
        """The PEFT config; ``total_steps`` is the fit's optimizer step count (None outside fit)."""

    @classmethod
    @abstractmethod
    def recognises(cls, config: PeftConfig) -> bool:
        """Whether a saved adapter's config is this method's (describes an adapter loaded to evaluate)."""

    @classmethod
    def describe_config(cls, config: PeftConfig) -> dict[str, Any]:
        """What results.json says about the method's ranks, read from a PEFT config."""
        return {}

    @classmethod
    def prepare_loaded(cls, model: PeftModel) -> None:
        """Make a saved adapter of this method, loaded frozen for evaluation, ready to run."""
        return None

    def check_quantization(self, quantization: Quantization) -> None:
        """Refuse, in one line, a quantised base this method cannot train on."""
        return None

    def hooks(self, model: PeftModel) -> AdapterHooks:
        """The training-time behaviour for a freshly built, trainable ``model``."""
        return AdapterHooks(model, type(self))

    def param_groups(self, model: PeftModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; groups without ``lr`` or ``weight_decay`` take the optimizer's."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params}] if params else []


class AdapterHooks:
    """A method's part in a training run; these defaults do nothing beyond PEFT's own forward.

    One instance per built model. Methods that act during training (AdaLoRA's rank allocation) or on
    export (PiSSA's conversion to plain LoRA) subclass it.
    """

    reads_gradients_after_step: ClassVar[bool] = False
    """True when :meth:`after_optimizer_step` reads ``.grad`` (DeepSpeed must then keep them)."""
    extra_loss_name: ClassVar[str | None] = None
    """Name of a regulariser PEFT adds to the loss its forward returns when labels go in; task modules
    then pass labels in and log the term as ``train/<name>``."""

    def __init__(self, model: PeftModel, method: type[PeftMethod]) -> None:
        self.model = model
        self.method = method

    @property
    def config(self) -> Any:
        return self.model.peft_config[ADAPTER]

    def on_fit_start(self, total_steps: int) -> None:
        """Called once a fit knows its optimizer step count."""

    def after_optimizer_step(self, global_step: int) -> dict[str, float]:
        """Called after each real optimizer step, gradients still present; returns values to log."""
        return {}

    def gradients_read(self) -> list[tuple[str, torch.nn.Parameter]]:
        """With ``reads_gradients_after_step``: the (name, parameter) pairs whose ``.grad``
        :meth:`after_optimizer_step` reads, in a fixed order (DeepSpeed gathers them for it)."""
        return []

    def edits_in_place(self, name: str) -> bool:
        """Whether :meth:`after_optimizer_step` changes parameter ``name`` in place (DeepSpeed's fp32
        master copy of it must then follow, or its next step would undo the change)."""
        return False

    def state_dict(self) -> dict[str, Any] | None:
        """Extra checkpoint state (None: nothing beyond the adapter weights)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; tensors arrive on the CPU."""

    def describe(self) -> dict[str, Any]:
        """What results.json says about the method."""
        info = {"method": self.method.method, "method_label": self.method.label}
        return {**info, **self.method.describe_config(self.config)}

    def extra_parameter_counts(self) -> dict[str, int | None]:
        """Counts beside PEFT's trainable/total (AdaLoRA: what the final rank budget keeps)."""
        return {}

    def save(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the adapter in PEFT format, loadable on the unchanged base model; from ``state_dict``
        (whole tensors) where the model's own are sharded (FSDP2)."""
        self.model.save_pretrained(str(directory), state_dict=state_dict)


def trainable_device(model: torch.nn.Module) -> torch.device:
    """Where the trained parameters live: restored optimizer-side state goes there."""
    return next(p.device for p in model.parameters() if p.requires_grad)
