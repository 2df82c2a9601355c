"""The ``lit_lora merge`` methods, one row each in ``COMBINATIONS`` (``--method``'s names, its help and
what it needs come from there), and what merge refuses, decided from the adapters' JSON configs before
any model loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lit_lora.errors import LitLoraError
from lit_lora.merge.average import average_ab


@dataclass(frozen=True)
class Combination:
    """One ``--method``: what it needs of the adapters and how it combines them. Every method takes
    plain LoRA adapters only (no AdaLoRA, no DoRA, no modules_to_save)."""

    name: str
    help: str
    """Its entry in ``lit_lora merge --help``; consecutive methods with the same help share it."""
    same_rank: bool = True
    """Sums A and B separately, so every adapter needs the same rank (checked by PEFT too)."""
    density: bool = False
    """Needs --density, the fraction of values kept (refused otherwise)."""
    same_scaling: bool = False
    """Needs equal lora_alpha, use_rslora and alpha_pattern."""
    divides_by_weight_sum: bool = False
    """Divides by the sum of --weights, so refuses weights that sum to 0."""
    combine: Callable[[list[Path], dict[str, Any], list[float], Path], None] | None = None
    """lit_lora's own ``combine(adapters, config, weights, out)``; None: PEFT's add_weighted_adapter
    with ``combination_type=name``."""


_PRUNED = (
    "PEFT's pruned/sign-elected merges of A and B (as in linear); need equal ranks and\n"
    "--density. DARE draws random masks: --seed makes the result reproducible."
)
COMBINATIONS: dict[str, Combination] = {
    c.name: c
    for c in (
        Combination(
            "linear",
            "A and B each summed with sqrt(weight * scaling): the result's B·A is\n"
            "(sum_i c_i B_i)(sum_j c_j A_j), c_i = sqrt(w_i * s_i), which holds cross terms\n"
            "B_i A_j, so it is NOT sum_i w_i dW_i. Needs equal ranks.",
        ),
        Combination(
            "cat",
            "A and B stacked: B·A = sum_i w_i dW_i exactly; the rank is the sum of the ranks.",
            same_rank=False,
        ),
        Combination("svd", "sum_i w_i dW_i, truncated by SVD to the largest source rank.", same_rank=False),
        Combination("ties", _PRUNED, density=True),
        Combination("dare_linear", _PRUNED, density=True),
        Combination("dare_ties", _PRUNED, density=True),
        Combination("magnitude_prune", _PRUNED, density=True),
        Combination(
            "average_ab",
            "lit_lora's baseline: A matrices and B matrices averaged separately,\n"
            "sum_i w_i X_i / sum_i w_i. This is NOT the average of the weight updates B·A.\n"
            "Needs equal ranks and scaling.",
            same_scaling=True,
            divides_by_weight_sum=True,
            combine=average_ab,
        ),
    )
}
METHODS: tuple[str, ...] = tuple(COMBINATIONS)
MergeMethod = Literal[METHODS]  # type: ignore[valid-type]  # the table's names, for the --method range check
OWN_METHODS = tuple(name for name, c in COMBINATIONS.items() if c.combine is not None)
DENSITY_METHODS = tuple(name for name, c in COMBINATIONS.items() if c.density)


def methods_help() -> str:
    """The methods part of ``lit_lora merge --help``, from the table."""
    lines: list[str] = []
    rows = list(COMBINATIONS.values())
    while rows:
        group = [rows.pop(0)]
        while rows and rows[0].help == group[0].help:
            group.append(rows.pop(0))
        names = ", ".join(c.name for c in group)
        first, *rest = group[0].help.splitlines()
        lines += [f"  {names:<17}{first}"] if len(names) < 17 else [f"  {names}", f"{'':19}{first}"]
        lines += [f"{'':19}{line}" for line in rest]
    return "\n".join(lines)


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
    combination = COMBINATIONS[method]
    if density is not None and not combination.density:
        raise LitLoraError(f"--density is used by {', '.join(DENSITY_METHODS)} only, not --method {method}")
    if combination.density and density is None:
        raise LitLoraError(f"--method {method} needs --density in (0, 1], the fraction of values kept")
    if combination.divides_by_weight_sum and sum(weights) == 0:
        raise LitLoraError(f"--weights sum to 0: {method} divides by their sum")
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
        if combination.same_rank and _ranks(config) != _ranks(first_config):
            raise LitLoraError(
                f"{adapter}: rank {_ranks(config)} differs from {first}'s {_ranks(first_config)}; --method "
                f"{method} needs equal ranks, use cat (exact) or svd (rank-truncated) instead"
            )
        if combination.same_scaling and _scale(config) != _scale(first_config):
            raise LitLoraError(
                f"{adapter}: lora_alpha/use_rslora {_scale(config)} differ from {first}'s "
                f"{_scale(first_config)}; {method} needs equal scaling, use cat or svd instead"
            )


def _scale(config: dict[str, Any]) -> tuple[Any, ...]:
    return config.get("lora_alpha"), config.get("use_rslora", False), config.get("alpha_pattern") or {}
