"""``average_ab``: the seed project's baseline, straight from the saved tensors (no model loads).

A and B are averaged separately, sum_i w_i X_i / sum_i w_i. The product of averages is not the
average of products, so this is NOT the average of the weight updates B·A; it is kept to compare.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_lora.errors import LitLoraError


def average_ab(adapters: list[Path], config: dict[str, Any], weights: list[float], out: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = [load_file(a / "adapter_model.safetensors") for a in adapters]
    for adapter, state in zip(adapters[1:], tensors[1:], strict=True):
        if state.keys() != tensors[0].keys():
            diff = sorted(state.keys() ^ tensors[0].keys())[:3]
            raise LitLoraError(f"{adapter}: its tensors differ from {adapters[0]}'s (e.g. {diff})")
    total = sum(weights)
    averaged = {
        key: (sum(w * state[key].float() for w, state in zip(weights, tensors, strict=True)) / total).to(
            value.dtype
        )
        for key, value in tensors[0].items()
    }
    save_file(averaged, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
