"""Merge LoRA adapters of one base model into one PEFT adapter folder (adapter + merge.json).

Methods (all but {own} are PEFT's PeftModel.add_weighted_adapter, with the weights as given):
{methods}

Refused, in one line: adapters of different base models, task types or target modules; AdaLoRA
(PEFT cannot merge it) and DoRA adapters; ranks a method cannot combine; and adapters with
modules_to_save (heads trained in full cannot be merged as LoRA updates, so none are averaged).
The base model comes from the adapters' adapter_config.json, or --base.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from lit_lora import __version__
from lit_lora.core.io import MERGED_ADAPTER, atomic_directory, atomic_write_json, file_sha256
from lit_lora.core.ranges import FiniteFloat, Range, Seed, check_config
from lit_lora.errors import LitLoraError
from lit_lora.merge.checks import (
    COMBINATIONS,
    DENSITY_METHODS,
    METHODS,
    OWN_METHODS,
    MergeMethod,
    check_adapters,
    methods_help,
    read_config,
)

__doc__ = (__doc__ or "").format(own=", ".join(OWN_METHODS), methods=methods_help())  # the table's rows

# PEFT task type -> the transformers class whose module names the adapter's keys were saved under.
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
AUTO_CLASSES = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
}


def merge(
    adapters: Sequence[Path],
    method: MergeMethod,
    weights: Sequence[FiniteFloat],
    out: Path,
    density: Annotated[float | None, Range(gt=0, le=1)] = None,
    seed: Seed = 0,
    base: str | None = None,
) -> Path:
    """Merge ``adapters`` into the PEFT adapter folder ``out``, written atomically; returns ``out``."""
    check_config(merge, locals(), "--")  # the declared ranges, named by their flags
    given = [Path(a) for a in adapters]  # recorded as typed: a relative path stays valid in another checkout
    adapters = [a.resolve() for a in given]
    configs = [read_config(a) for a in adapters]
    check_adapters(adapters, configs, method, list(weights), density)
    base_name = base or configs[0].get("base_model_name_or_path")
    if not base_name:
        raise LitLoraError(
            f"{adapters[0]}: adapter_config.json names no base_model_name_or_path; give --base"
        )
    with atomic_directory(out, MERGED_ADAPTER, given, "--out") as tmp:
        combine = COMBINATIONS[method].combine
        if combine is not None:
            combine(adapters, {**configs[0], "base_model_name_or_path": base_name}, list(weights), tmp)
        else:
            _peft_merge(adapters, configs[0], method, list(weights), density, seed, base_name, tmp)
        atomic_write_json(tmp / "merge.json", _record(given, method, weights, density, seed, base_name))
    return Path(out)


def _peft_merge(
    adapters: list[Path],
    config: dict[str, Any],
    method: str,
    weights: list[float],
    density: float | None,
    seed: int,
    base_name: str,
    out: Path,
) -> None:
    import torch
    from peft import PeftModel

    model = _load_base(base_name, config.get("task_type"))
    names = [f"source_{i}" for i in range(len(adapters))]
    peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, adapter in zip(names[1:], adapters[1:], strict=True):
        peft_model.load_adapter(str(adapter), adapter_name=name)
    torch.manual_seed(seed)  # DARE's Bernoulli masks come from the global generator
    try:
        # "default" so that save_pretrained writes into ``out`` itself, not a subfolder.
        peft_model.add_weighted_adapter(names, weights, "default", combination_type=method, density=density)
    except (ValueError, TypeError) as err:
        raise LitLoraError(f"--method {method}: PEFT cannot merge these adapters: {err}") from err
    merged = peft_model.peft_config["default"]
    # PEFT sets lora_alpha = r so the merged scaling is 1; with rsLoRA kept it would load as sqrt(r).
    merged.use_rslora = False
    merged.base_model_name_or_path = base_name
    peft_model.save_pretrained(str(out), selected_adapters=["default"])


def _load_base(base_name: str, task_type: str | None) -> Any:
    import transformers

    from lit_lora.core.hub import load_config, resolve_model_path

    config = load_config(base_name)
    auto_cls = getattr(transformers, AUTO_CLASSES.get(task_type or "", "AutoModel"))
    return auto_cls.from_pretrained(resolve_model_path(base_name), config=config)


def adapter_weights_sha256(adapter: Path) -> str | None:
    """SHA-256 of the adapter's weights file: which weights were merged, wherever the folder moves."""
    weights = next((adapter / n for n in WEIGHT_FILES if (adapter / n).is_file()), None)
    return None if weights is None else file_sha256(weights)


def _record(
    adapters: list[Path], method: str, weights: Sequence[float], density: float | None, seed: int, base: str
) -> dict[str, Any]:
    return {
        "sources": [
            {"path": str(a), "weight": w, "sha256": adapter_weights_sha256(a)}
            for a, w in zip(adapters, weights, strict=True)
        ],
        "method": method,
        "weights": list(weights),
        "density": density,
        "seed": seed,
        "base_model": base,
        "modules_to_save": "refused: adapters with modules_to_save are not merged",
        "lit_lora_version": __version__,
        "peft_version": importlib.metadata.version("peft"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lit_lora merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapters", nargs="+", type=Path, help="PEFT adapter folders (adapter_config.json)")
    # No argparse choices: a bad method gets lit_lora's one-line error, not usage plus a message.
    parser.add_argument(
        "--method", required=True, help=f"how to combine them: {', '.join(METHODS)} (see above)"
    )
    parser.add_argument("--weights", required=True, nargs="+", type=float, help="one weight per adapter")
    parser.add_argument(
        "--density", type=float, help=f"fraction of values kept, in (0, 1]; {', '.join(DENSITY_METHODS)} only"
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed set before merging (DARE masks)")
    parser.add_argument("--base", help="base model name or path, instead of the adapters' own")
    parser.add_argument("--out", type=Path, required=True, help="the merged adapter folder to write")
    args = parser.parse_args(argv)
    out = merge(args.adapters, args.method, args.weights, args.out, args.density, args.seed, args.base)
    print(f"merged {len(args.adapters)} adapter(s) with {args.method} into {out}")
