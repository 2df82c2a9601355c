"""Export for initialisations that move part of the base weight into the adapter (PiSSA, OLoRA).

Such an adapter only fits the residual base PEFT made at initialisation. PEFT's conversion
(``save_pretrained(path_initial_model_for_weight_conversion=...)``) turns the trained adapter into a
plain LoRA adapter of twice the rank that fits the unchanged base; it needs the initial adapter, which
these hooks keep from the moment the model is built (the initialisation is deterministic, so a
resumed run rebuilds the same one).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from lit_lora.methods.base import AdapterHooks, PeftMethod


class ConvertedOnExport(AdapterHooks):
    def __init__(self, model: PeftModel, method: type[PeftMethod]) -> None:
        super().__init__(model, method)
        self._initial: dict[str, torch.Tensor] = {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in get_peft_model_state_dict(model).items()
        }

    def save(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        # PEFT's conversion loads the initial adapter into the model and reads it back from the same
        # ``state_dict``; a sharded model (FSDP2) cannot take part, so these methods refuse it
        # (``supports_fsdp``) and ``state_dict`` is always None here.
        assert state_dict is None, "PiSSA/OLoRA export from a sharded model"
        with tempfile.TemporaryDirectory() as scratch:
            # PEFT writes the initial adapter's config there itself and loads it under the folder's name.
            initial = Path(scratch) / "initial_adapter"
            initial.mkdir()
            save_file(self._initial, str(initial / "adapter_model.safetensors"))
            self.model.save_pretrained(str(directory), path_initial_model_for_weight_conversion=str(initial))
        # PEFT's conversion keeps only lora_A and lora_B: put back what else it would save (trained heads,
        # biases), unchanged since they never left the model.
        weights = Path(directory) / "adapter_model.safetensors"
        converted = load_file(str(weights))
        rest = {k: v for k, v in get_peft_model_state_dict(self.model).items() if k not in converted}
        rest = {k: v.detach().to("cpu").contiguous() for k, v in rest.items() if not _is_low_rank(k)}
        save_file({**converted, **rest}, str(weights), metadata={"format": "pt"})


def _is_low_rank(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key
