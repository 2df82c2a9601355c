"""What 4-bit and 8-bit bases save on a real decoder: weight footprint and process peak, per quantisation.

    python benchmarks/quant_memory.py --json results/benchmarks/quant_memory_smollm2_cpu.json

Each variant (fp32 LoRA, NF4, NF4 + double quantisation, LLM.int8()) is one ``python -m lit_lora fit``
process of the same few GSM8K steps on SmolLM2-135M-Instruct (LoRA r 16 on every projection), run
back to back; the numbers are what each run's ``results.json`` records: ``weight_memory_mb`` (the
weights as stored, quantisation constants included) and ``peak_memory_mb`` (the process's peak RSS on
CPU, CUDA's peak allocation on a GPU). The ratios are against the fp32 LoRA run of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_lora.core.io import atomic_write_json  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "lora_fp32": [],
    "qlora_nf4": ["--model.quantization.mode=nf4", "--model.quantization.double_quant=false"],
    "qlora_nf4_double_quant": ["--model.quantization.mode=nf4", "--model.quantization.double_quant=true"],
    "lora_int8": ["--model.quantization.mode=int8"],
}


def run_variant(name: str, extra: list[str], args: argparse.Namespace, root: Path) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "lit_lora", "fit", "--config", "configs/gsm8k_smollm2.yaml",
        f"--model.model_name_or_path={args.model}", f"--data.data_dir={args.data_dir}",
        f"--data.max_train_samples={args.steps * args.batch_size}", f"--data.batch_size={args.batch_size}",
        f"--trainer.max_steps={args.steps}", "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false", f"--trainer.accelerator={args.accelerator}",
        f"--trainer.default_root_dir={root / name}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"{name} failed: {' | '.join(tail)}")
    (record_path,) = (root / name).glob("lightning_logs/version_*/results.json")
    record = json.loads(record_path.read_text())
    return {
        "weight_memory_mb": record["weight_memory_mb"],
        "peak_memory_mb": record["peak_memory_mb"],
        "memory_kind": record["memory_kind"],
        "train_time_s": record["train_time_s"],
        "train_loss": record["metrics"].get("train/loss"),
        "trainable": record["parameters"]["trainable"],
        "device": record["device_name"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data/gsm8k")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per variant")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accelerator", default="cpu", help="cpu, or cuda for CUDA peak memory")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_variant(name, extra, args, Path(tmp)) for name, extra in VARIANTS.items()}
    base = runs["lora_fp32"]
    for row in runs.values():
        row["weights_vs_fp32"] = round(row["weight_memory_mb"] / base["weight_memory_mb"], 3)
        row["peak_vs_fp32"] = round(row["peak_memory_mb"] / base["peak_memory_mb"], 3)

    print(f"\n{'':24}{'weights MB':>11}{'x fp32':>8}{'peak MB':>10}{'x fp32':>8}{'train s':>9}{'loss':>8}")
    for name, r in runs.items():
        print(
            f"{name:24}{r['weight_memory_mb']:>11.1f}{r['weights_vs_fp32']:>8.3f}{r['peak_memory_mb']:>10.0f}"
            f"{r['peak_vs_fp32']:>8.3f}{r['train_time_s']:>9.1f}{r['train_loss'] or float('nan'):>8.3f}"
        )
    print(f"peak kind: {base['memory_kind']}; device: {base['device']}")
    if args.json is not None:
        settings = {k: str(v) for k, v in vars(args).items() if k != "json"}
        atomic_write_json(args.json, {"runs": runs, "settings": settings})


if __name__ == "__main__":
    main()
