"""SST-2 LoRA on packaged MiniLM: lit_lora (Lightning) vs a plain Hugging Face ``Trainer``, in one run.

    python benchmarks/sst2_vs_hf_trainer.py --json results/benchmarks/sst2_vs_hf_trainer_cpu.json

Both train the same rows for one epoch with the same hyper-parameters and seed. Only training is
timed: data is tokenised beforehand in both, the baseline's model is built beforehand too, while
lit_lora builds its model inside ``trainer.fit`` (under a second). ``cpu_s`` is process CPU time;
``tok/sample`` counts padded tokens per training row (lit_lora batches by length, the baseline not).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a CPU-kernel notice printed on import

import datasets  # noqa: E402
import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from lightning.fabric.utilities.warnings import PossibleUserWarning  # noqa: E402
from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402

from lit_lora import LoraSpec  # noqa: E402
from lit_lora.callbacks.meter import cpu_model  # noqa: E402
from lit_lora.core.hub import resolve_model_path  # noqa: E402
from lit_lora.core.io import atomic_write_json  # noqa: E402
from lit_lora.data import SST2DataModule  # noqa: E402
from lit_lora.models import SequenceClassifier  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REPO = Path(__file__).resolve().parents[1]
BATCH, MAX_LEN, LR, WARMUP_RATIO = 32, 64, 5e-4, 0.06
R, ALPHA, DROPOUT, TARGETS = 16, 32, 0.1, ["query", "key", "value"]


class Counter:
    """Training rows and padded tokens seen, plus wall and CPU time between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.samples = self.tokens = 0
        self.wall_s = self.cpu_s = 0.0

    def add(self, input_ids: torch.Tensor) -> None:
        self.samples += input_ids.shape[0]
        self.tokens += input_ids.numel()

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall_s, self.cpu_s = time.perf_counter() - self._t0, time.process_time() - self._c0


class CountBatches(L.Callback):
    """Counts the padded tokens of every lit_lora training batch."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, i: int) -> None:
        self.counter.add(batch["input_ids"])


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    flags = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(accelerator="cpu", devices=1, enable_model_summary=False, **flags, **kwargs)


def run_lit_lora(data_dir: Path, train_rows: int, seed: int) -> dict[str, Any]:
    """lit_lora: SequenceClassifier + SST2DataModule + lightning.Trainer; times ``trainer.fit``."""
    dm = SST2DataModule(
        MODEL, data_dir=str(data_dir), max_length=MAX_LEN, batch_size=BATCH, max_train_samples=train_rows,
        seed=seed,
    )  # fmt: skip
    dm.setup("fit")  # tokenise outside the timed region, as the baseline does
    torch.manual_seed(seed)
    lora = LoraSpec(r=R, alpha=ALPHA, dropout=DROPOUT, target_modules=TARGETS)
    model = SequenceClassifier(MODEL, adapter=lora, learning_rate=LR, warmup_ratio=WARMUP_RATIO)
    counter = Counter()
    trainer = quiet_trainer(
        max_epochs=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,  # as the HF Trainer's default max_grad_norm and lit_lora's configs
        callbacks=[CountBatches(counter)],
    )
    counter.start()
    trainer.fit(model, datamodule=dm)
    counter.stop()
    (val,) = quiet_trainer().validate(model, datamodule=dm, verbose=False)
    return row(len(dm.splits["train"]), counter, float(val["val/acc"]), trainer.global_step)


def read_tsv(path: Path, limit: int | None) -> datasets.Dataset:
    with path.open(newline="") as handle:  # SST-2 sentences hold bare quotes: quoting off
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return datasets.Dataset.from_dict(
        {"text": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]}
    )


def run_hf_trainer(data_dir: Path, train_rows: int, seed: int) -> dict[str, Any]:
    """Baseline: AutoModel + peft.get_peft_model + transformers.Trainer with default options."""
    path = resolve_model_path(MODEL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    def encode(split: str, limit: int | None) -> datasets.Dataset:
        raw = read_tsv(data_dir / f"{split}.tsv", limit)
        return raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LEN), batched=True)

    train, dev = encode("train", train_rows), encode("dev", None)
    torch.manual_seed(seed)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS,
        modules_to_save=["classifier"],
    )  # fmt: skip
    model = get_peft_model(base, lora)
    counter, pad = Counter(), transformers.DataCollatorWithPadding(tokenizer)

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features)
        if model.training:  # evaluation batches are not counted
            counter.add(batch["input_ids"])
        return batch

    def accuracy(pred: transformers.EvalPrediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
            num_train_epochs=1, learning_rate=LR,
            warmup_steps=math.ceil(WARMUP_RATIO * math.ceil(len(train) / BATCH)),  # no warmup_ratio in 5.x
            eval_strategy="no", save_strategy="no", report_to="none", dataloader_num_workers=0,
            seed=seed, use_cpu=True, disable_tqdm=True, label_names=["labels"],
        )  # fmt: skip
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=train, eval_dataset=dev, data_collator=collate,
            compute_metrics=accuracy,
        )  # fmt: skip
        trainer.remove_callback(transformers.PrinterCallback)
        counter.start()
        trainer.train()
        counter.stop()
        acc = trainer.evaluate()["eval_accuracy"]
    return row(len(train), counter, float(acc), trainer.state.global_step)


def row(n: int, counter: Counter, acc: float, steps: int) -> dict[str, Any]:
    per_sample = counter.tokens / max(counter.samples, 1)
    return {
        "train_rows": n, "steps": steps, "train_s": round(counter.wall_s, 2),
        "cpu_s": round(counter.cpu_s, 2), "samples_per_s": round(n / counter.wall_s, 2),
        "dev_acc": round(acc, 4), "padded_tokens": counter.tokens, "tokens_per_sample": round(per_sample, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def cpu_info() -> str:
    return f"{cpu_model()} x{os.cpu_count()} logical CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-rows", type=int, default=8000, help="first N rows of train.tsv")
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared/data/sst2", help="SST-2 tsv folder"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one run of each per seed")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers here")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bar()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, PossibleUserWarning):
        warnings.filterwarnings("ignore", category=category)

    data_dir = args.data_dir.resolve()
    load_before = round(os.getloadavg()[0], 2)
    runs: dict[str, list[dict[str, Any]]] = {"lit_lora": [], "hf_trainer": []}
    for seed in args.seeds:  # alternate the two so that any drift in machine load hits both alike
        runs["lit_lora"].append({"seed": seed, **run_lit_lora(data_dir, args.train_rows, seed)})
        runs["hf_trainer"].append({"seed": seed, **run_hf_trainer(data_dir, args.train_rows, seed)})
    summary = {name: summarise(rows) for name, rows in runs.items()}
    ratio = summary["lit_lora"]["samples_per_s"] / summary["hf_trainer"]["samples_per_s"]
    env = {
        "torch_threads": torch.get_num_threads(), "cpu": cpu_info(), "load_avg_1m_before": load_before,
        "torch": torch.__version__, "transformers": transformers.__version__, "lightning": L.__version__,
        "data_dir": str(data_dir), "seeds": args.seeds,
    }  # fmt: skip

    print(f"\n{'':12}{'seed':>5}{'train s':>9}{'cpu s':>9}{'samples/s':>11}{'dev acc':>9}{'tok/sample':>12}")
    for name, rows in runs.items():
        for r in rows:
            print(
                f"{name:12}{r['seed']:>5}{r['train_s']:>9.1f}{r['cpu_s']:>9.1f}{r['samples_per_s']:>11.1f}"
                f"{r['dev_acc']:>9.4f}{r['tokens_per_sample']:>12.1f}"
            )
    for name, m in summary.items():
        print(
            f"{name:12} mean samples/s {m['samples_per_s']:.1f}, "
            f"dev acc {m['dev_acc']:.4f} ± {m['dev_acc_std']:.4f}"
        )
    print(f"\nsamples/s ratio lit_lora / hf_trainer (means): {ratio:.2f}")
    print(f"torch threads: {env['torch_threads']}; cpu: {env['cpu']}; 1-min load avg before: {load_before}")
    if args.json is not None:
        record = {"runs": runs, "summary": summary, "ratio_samples_per_s": round(ratio, 3), "env": env}
        atomic_write_json(args.json, record)


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    accs = [r["dev_acc"] for r in rows]
    return {
        "samples_per_s": round(float(np.mean([r["samples_per_s"] for r in rows])), 2),
        "dev_acc": round(float(np.mean(accs)), 4),
        "dev_acc_std": round(float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0, 4),
    }


if __name__ == "__main__":
    main()
