"""What ``lit_lora merge`` refuses, decided from the adapters' JSON configs before any model loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

from lit_lora.errors import LitLoraError

# PEFT's add_weighted_adapter combination types that lit_lora exposes, plus lit_lora's own baseline.
MergeMethod = Literal[
    "linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune", "average_ab"
]
METHODS: tuple[str, ...] = get_args(MergeMethod)
PEFT_METHODS = METHODS[:-1]
# PEFT sums A and B separately for these, so every adapter needs the same rank (checked by PEFT too).
SAME_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune", "average_ab")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")


def read_config(adapter: Path) -> dict[str, Any]:
    path = adapter / "adapter_config.json"
    if not path.is_file():
        raise LitLoraError(f"{adapter}: no adapter_config.json there (is it a PEFT adapter folder?)")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise LitLoraError(f"{adapter}: no adapter_model.safetensors there")
    return json.loads(path.read_text())


def _targets(config: dict[str, Any]) -> Any:
    targets = config.get("target_modules")
    return sorted(targets) if isinstance(targets, list) else targets


def _ranks(config: dict[str, Any]) -> tuple[int, dict[str, int]]:
    return config.get("r"), config.get("rank_pattern") or {}


def check_adapters(
    adapters: list[Path],
    configs: list[dict[str, Any]],
    method: str,
    weights: list[float],
    density: float | None,
) -> None:
    """Raise LitLoraError, in one line naming the adapter and the fix, for anything that cannot merge."""
    if len(weights) != len(adapters):
        raise LitLoraError(
            f"--weights: {len(weights)} weight(s) for {len(adapters)} adapter(s); give one each"
        )
    if density is not None and method not in DENSITY_METHODS:
        raise LitLoraError(f"--density is used by {', '.join(DENSITY_METHODS)} only, not --method {method}")
    if method in DENSITY_METHODS and density is None:
        raise LitLoraError(f"--method {method} needs --density in (0, 1], the fraction of values kept")
    if method == "average_ab" and sum(weights) == 0:
        raise LitLoraError("--weights sum to 0: average_ab divides by their sum")
    first, first_config = adapters[0], configs[0]
    for adapter, config in zip(adapters, configs, strict=True):
        if config.get("peft_type") != "LORA":
            # PEFT's AdaLoraModel.add_weighted_adapter raises TypeError; its A·E·B/ranknum layout differs.
            raise LitLoraError(
                f"{adapter}: peft_type {config.get('peft_type')} cannot be merged; lit_lora merge takes "
                "plain LoRA adapters (PEFT does not merge AdaLoRA adapters)"
            )
        if config.get("modules_to_save"):
            raise LitLoraError(
                f"{adapter}: modules_to_save={config['modules_to_save']} are trained in full, and full "
                "weights cannot be merged as LoRA updates; lit_lora merge refuses such adapters"
            )
        if config.get("use_dora"):
            raise LitLoraError(f"{adapter}: DoRA adapters (use_dora) cannot be merged with these methods")
        for key, what in (("base_model_name_or_path", "base model"), ("task_type", "task type")):
            if config.get(key) != first_config.get(key):
                raise LitLoraError(
                    f"{adapter}: {what} {config.get(key)!r} is not {first}'s {first_config.get(key)!r}: "
                    "only adapters of one base and task merge"
                )
        if _targets(config) != _targets(first_config):
            raise LitLoraError(
                f"{adapter}: target_modules {_targets(config)} differ from {first}'s {_targets(first_config)}"
            )
        if method in SAME_RANK_METHODS and _ranks(config) != _ranks(first_config):
            raise LitLoraError(
                f"{adapter}: rank {_ranks(config)} differs from {first}'s {_ranks(first_config)}; --method "
                f"{method} needs equal ranks, use cat (exact) or svd (rank-truncated) instead"
            )
        if method == "average_ab" and _scale(config) != _scale(first_config):
            raise LitLoraError(
                f"{adapter}: lora_alpha/use_rslora {_scale(config)} differ from {first}'s "
                f"{_scale(first_config)}; average_ab needs equal scaling, use cat or svd instead"
            )


def _scale(config: dict[str, Any]) -> tuple[Any, ...]:
    return config.get("lora_alpha"), config.get("use_rslora", False), config.get("alpha_pattern") or {}
