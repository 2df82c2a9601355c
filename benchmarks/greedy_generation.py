"""Greedy generation of GSM8K-style prompts: Hugging Face ``generate`` vs lit_lora's ``greedy_generate``.

    OMP_NUM_THREADS=1 python benchmarks/greedy_generation.py --model HuggingFaceTB/SmolLM2-135M-Instruct

``generate`` keeps every row in the batch until the longest reply ends; ``greedy_generate`` drops each
row (and its key/value cache) once it emits a stop token. Both get the same left-padded batches, stop
tokens and token budget, as ``CausalLM.generate`` calls them; the two alternate batch by batch so that
drifting machine load hits both alike. Without ``--model`` a seeded tiny Llama is built (runs anywhere,
but its random replies rarely stop, so there both cost the same). ``cpu_s`` is process CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_lora.core.hub import resolve_model_path
from lit_lora.core.io import atomic_write_json
from lit_lora.models.lm.greedy import greedy_generate
from lit_lora.tiny_decoder import BUILTIN_TEXT, build_tiny_decoder

REPO = Path(__file__).resolve().parents[1]
GSM8K_TEST = REPO.parent / "shared/data/gsm8k/test.jsonl"


def questions(path: Path, count: int) -> list[str]:
    """The first ``count`` GSM8K questions, or the built-in text's when the file is absent."""
    if path.is_file():
        with path.open(encoding="utf-8") as rows:
            found = [json.loads(line)["question"] for line, _ in zip(rows, range(count), strict=False)]
    else:
        found = [ln.split("Question: ", 1)[1] for ln in BUILTIN_TEXT.splitlines() if "Question: " in ln]
    return [found[i % len(found)] for i in range(count)]


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """As CausalLM.generate: the generation config's EOS ids and the tokenizer's."""
    stop = model.generation_config.eos_token_id
    return {*(stop if isinstance(stop, list) else [stop]), tokenizer.eos_token_id} - {None}


def timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def hf_generate(model: Any, ids: torch.Tensor, mask: torch.Tensor, new: int, stop: set[int], pad: int) -> Any:
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
        eos_token_id=sorted(stop), pad_token_id=pad, use_cache=True,
    )  # fmt: skip
    return out[:, ids.shape[1] :].tolist()


def run(model: Any, tokenizer: Any, prompts: list[str], batch_size: int, new_tokens: int) -> dict[str, Any]:
    stop = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    methods = {"hf_generate": hf_generate, "greedy_generate": greedy_generate}
    totals = {name: {"wall_s": 0.0, "cpu_s": 0.0} for name in methods}
    texts: dict[str, list[str]] = {name: [] for name in methods}
    lengths: list[int] = []
    padded_steps = 0  # row-steps generate computes: rows x the batch's longest reply
    warm = tokenizer(prompts[:1], return_tensors="pt")
    for fn in methods.values():  # first calls pay one-off set-up; neither timing should carry it
        timed(fn, model, warm["input_ids"], warm["attention_mask"], 2, stop, pad)
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        for name, fn in methods.items():
            replies, wall, cpu = timed(
                fn, model, batch["input_ids"], batch["attention_mask"], new_tokens, stop, pad
            )
            totals[name]["wall_s"] += wall
            totals[name]["cpu_s"] += cpu
            texts[name] += tokenizer.batch_decode(replies, skip_special_tokens=True)
        lengths += [len(r) for r in replies]  # greedy_generate's: each reply up to its stop token
        padded_steps += len(replies) * max(len(r) for r in replies)
    for numbers in totals.values():
        numbers.update({k: round(v, 2) for k, v in numbers.items()})
    return {
        **totals,
        "identical": texts["hf_generate"] == texts["greedy_generate"],
        "reply_tokens": lengths,
        "row_steps": {"hf_generate": padded_steps, "greedy_generate": sum(lengths)},
        "speedup_wall": round(totals["hf_generate"]["wall_s"] / totals["greedy_generate"]["wall_s"], 2),
    }


def load(model: str | None, scratch: Path) -> tuple[Any, Any, str]:
    path = build_tiny_decoder(scratch / "tiny_llama", "llama") if model is None else resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer, model or "tiny seeded llama"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="hub name or folder; default: a seeded tiny Llama")
    parser.add_argument("--data", type=Path, default=GSM8K_TEST, help="GSM8K jsonl whose questions to use")
    parser.add_argument("--prompts", type=int, default=8, help="how many questions")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="token budget per reply")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers here")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)

    prompts = [f"Question: {q.strip()}\nAnswer:" for q in questions(args.data, args.prompts)]
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as scratch:
        model, tokenizer, name = load(args.model, Path(scratch))
        result = run(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    lengths = result["reply_tokens"]
    for method in ("hf_generate", "greedy_generate"):
        print(f"{method:16} wall {result[method]['wall_s']:7.2f} s   cpu {result[method]['cpu_s']:7.2f} s")
    print(f"identical outputs: {result['identical']}; wall speed-up {result['speedup_wall']:.2f}x")
    steps = result["row_steps"]
    print(f"reply tokens per row: {lengths}")
    print(
        f"row-steps computed: hf_generate {steps['hf_generate']}, greedy_generate {steps['greedy_generate']}"
    )
    env = {
        "model": name, "prompts": args.prompts, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "torch_threads": torch.get_num_threads(),
        "load_avg_1m_before": load_before, "torch": torch.__version__,
        "transformers": transformers.__version__,
    }  # fmt: skip
    print(f"model: {name}; torch threads: {env['torch_threads']}; 1-min load avg before: {load_before}")
    if args.json is not None:
        atomic_write_json(args.json, {"result": result, "env": env})


if __name__ == "__main__":
    main()
