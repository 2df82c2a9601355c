"""LoRA training steps on GSM8K rows: padded batches vs packed ones (``data.packing``), same rows per step.

    OMP_NUM_THREADS=1 python benchmarks/packing.py --model HuggingFaceTB/SmolLM2-135M-Instruct

Both modes read their batches from ``GSM8KDataModule`` with the same seed, so step k trains the same rows
either way; each step is a forward and backward of the LoRA model with the loss ``CausalLM`` takes
(summed token NLL), and the two alternate step by step so that drifting machine load hits both alike.
``tokens/s`` counts real tokens (padding excluded) per second of wall time, and of process CPU time,
which a busy machine disturbs less. A padded batch computes rows x its longest row; a packed one only
its tokens. Packed batches run two ways: ``packed`` as a fit with packing runs them (each sequence
attends alone: ``lit_lora/models/lm/varlen_attention.py``) and ``packed_mask`` as transformers' sdpa
runs them (attention over the whole packed row under a block-diagonal mask). Both training orders are
measured: length-grouped batches (lit_lora's default, little padding) and shuffled ones
(``data.group_by_length=false``). Without ``--model`` a seeded tiny Llama is built; its small BPE makes
GSM8K rows longer than a real tokenizer does.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers

from lit_lora.core.io import atomic_write_json
from lit_lora.data import GSM8KDataModule
from lit_lora.methods import LoraSpec
from lit_lora.metrics.language_model import token_nll
from lit_lora.models import CausalLM
from lit_lora.models.lm.packing import packed_inputs
from lit_lora.models.lm.varlen_attention import use_varlen_attention
from lit_lora.tiny_decoder import build_tiny_decoder

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared/data/gsm8k"


def batches(model: str, args: argparse.Namespace, packing: bool, grouped: bool) -> list[dict[str, Any]]:
    data = GSM8KDataModule(
        tokenizer_name=model, data_dir=str(args.data), batch_size=args.batch_size,
        max_train_samples=args.rows, group_by_length=grouped, packing=packing, seed=0,
    )  # fmt: skip
    data.setup("fit")
    return list(data.train_dataloader())


def padded_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def masked_packed_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """Without the sequences' bounds the varlen attention is sdpa over the row, block-diagonal mask."""
    inputs = packed_inputs(batch)
    del inputs["cu_seq_lens_q"]
    return inputs


def step(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[float, float, float]:
    """One forward and backward; (summed NLL, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    nll, _ = token_nll(model(**inputs).logits, labels)
    nll.backward()
    model.zero_grad(set_to_none=True)
    return float(nll), time.perf_counter() - wall, time.process_time() - cpu


def run(model: Any, padded: list[dict[str, Any]], packed: list[dict[str, Any]]) -> dict[str, Any]:
    modes = {
        "padded": (padded, padded_inputs),
        "packed": (packed, packed_inputs),
        "packed_mask": (packed, masked_packed_inputs),
    }
    for batches_of_mode, inputs in modes.values():  # first calls pay one-off set-up
        step(model, inputs(batches_of_mode[0]), batches_of_mode[0]["labels"])
    seconds, cpu_seconds, nll = (dict.fromkeys(modes, 0.0) for _ in range(3))
    for index in range(len(padded)):
        for name, (batches_of_mode, inputs) in modes.items():
            batch = batches_of_mode[index]
            loss, wall, cpu = step(model, inputs(batch), batch["labels"])
            seconds[name] += wall
            cpu_seconds[name] += cpu
            nll[name] += loss
    tokens = sum(int(b["attention_mask"].sum()) for b in padded)
    computed = sum(b["input_ids"].numel() for b in padded)
    rows = sum(b["input_ids"].shape[0] for b in padded)
    return {
        "rows": rows,
        "steps": len(padded),
        "real_tokens": tokens,
        "padded_tokens_per_row": round((computed - tokens) / rows, 1),
        "padding_share": round((computed - tokens) / computed, 3),
        "longest_pack": max(b["input_ids"].shape[1] for b in packed),
        **{f"{name}_wall_s": round(s, 2) for name, s in seconds.items()},
        **{f"{name}_cpu_s": round(s, 2) for name, s in cpu_seconds.items()},
        **{f"{name}_tokens_per_s": round(tokens / s, 1) for name, s in seconds.items()},
        **{f"{name}_tokens_per_cpu_s": round(tokens / s, 1) for name, s in cpu_seconds.items()},
        "speedup": round(seconds["padded"] / seconds["packed"], 2),
        "speedup_cpu": round(cpu_seconds["padded"] / cpu_seconds["packed"], 2),
        "speedup_mask_cpu": round(cpu_seconds["padded"] / cpu_seconds["packed_mask"], 2),
        "summed_nll": {name: round(value, 3) for name, value in nll.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub name or folder; default: a seeded tiny Llama")
    parser.add_argument("--data", type=Path, default=GSM8K, help="folder with GSM8K train.jsonl")
    parser.add_argument("--rows", type=int, default=64, help="training rows to run through")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers here")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)

    datasets.disable_progress_bars()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    load_before = round(os.getloadavg()[0], 2)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = args.model or str(build_tiny_decoder(Path(scratch) / "tiny_llama", "llama"))
        torch.manual_seed(0)
        module = CausalLM(path, adapter=LoraSpec(r=8, alpha=16, dropout=0.0))
        use_varlen_attention(module.peft_model.get_base_model())  # as a fit with packing does
        # Length grouping (lit_lora's default) already removes most padding; shuffled batches keep it.
        for order, grouped in (("length-grouped", True), ("shuffled", False)):
            padded, packed = (batches(path, args, packing, grouped) for packing in (False, True))
            results[order] = run(module.peft_model, padded, packed)
    name = args.model or "tiny seeded llama"
    for order, result in results.items():
        print(
            f"{order}: {result['rows']} GSM8K rows in {result['steps']} steps of {args.batch_size}; "
            f"{result['padded_tokens_per_row']} padding tokens per padded row "
            f"({result['padding_share']:.1%} of computed tokens); longest packed row {result['longest_pack']}"
        )
        for mode in ("padded", "packed", "packed_mask"):
            wall, speed = result[f"{mode}_wall_s"], result[f"{mode}_tokens_per_s"]
            cpu, cpu_speed = result[f"{mode}_cpu_s"], result[f"{mode}_tokens_per_cpu_s"]
            print(f"  {mode:11} wall {wall:7.2f} s {speed:8.1f} tokens/s", end="")
            print(f"   cpu {cpu:7.2f} s {cpu_speed:8.1f} tokens/s")
        print(
            f"  packed speed-up {result['speedup']:.2f}x wall, {result['speedup_cpu']:.2f}x cpu "
            f"(under the mask: {result['speedup_mask_cpu']:.2f}x cpu); summed NLL {result['summed_nll']}"
        )
    env = {
        "model": name, "attention": module.peft_model.get_base_model().config._attn_implementation,
        "torch_threads": torch.get_num_threads(), "load_avg_1m_before": load_before,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }  # fmt: skip
    threads = env["torch_threads"]
    print(f"model: {name} ({env['attention']}); torch threads: {threads}; load avg before: {load_before}")
    if args.json is not None:
        atomic_write_json(args.json, {"results": results, "env": env})


if __name__ == "__main__":
    main()
