"""The bad-input matrix: each case is a command line (and the files it needs) that must fail in one line.

``tests/test_bad_input.py`` runs every case; ``python -m tests.helpers.bad_inputs`` prints the table of
``docs/bad-input.md``: the messages lit_lora really gives (it needs the fixtures, so it builds them in a
scratch folder).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

from tests.helpers.builders import GSM8K_ROWS


@dataclass
class Case:
    name: str
    expected: str  # a fragment of the one error line
    args: Callable[[Path], list[str]] = field(default=lambda tmp: [])  # extra CLI arguments
    config: str = "configs/sst2_lora.yaml"
    patch: Callable[[], contextlib.AbstractContextManager[Any]] | None = None


def write_tsv(directory: Path, rows: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, text in rows.items():
        (directory / f"{split}.tsv").write_text(text)
    return directory


GOOD = "sentence\tlabel\n" + "a fine film\t1\na dull film\t0\n" * 4


def foreign_adapter(tmp: Path) -> Path:
    """A LoRA adapter saved for another (16-wide) BERT: it cannot load onto the 32-wide fixture."""
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    model = get_peft_model(BertForSequenceClassification(config), LoraConfig(r=2, target_modules=["query"]))
    model.save_pretrained(tmp / "foreign")
    return tmp / "foreign"


def truncated_adapter(tmp: Path, model: Path) -> Path:
    base = BertForSequenceClassification.from_pretrained(model, num_labels=2)
    get_peft_model(base, LoraConfig(r=2, target_modules=["query"])).save_pretrained(tmp / "truncated")
    weights = tmp / "truncated" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return tmp / "truncated"


def other_rank_checkpoint(tmp: Path, model: Path, data: Path, r: int = 2) -> Path:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_lora import LoraSpec
    from tests.helpers import classifier, sst2, trainer

    checkpoint = ModelCheckpoint(dirpath=tmp / "other", save_last=True)
    module = classifier(model, adapter=LoraSpec(r=r, target_modules=["query", "value"]), num_labels=2)
    trainer(tmp / "other", max_steps=1, callbacks=[checkpoint], enable_checkpointing=True).fit(
        module, sst2(model, data)
    )
    return tmp / "other" / "last.ckpt"


def two_process_checkpoint(tmp: Path, model: Path, data: Path) -> Path:
    """A checkpoint of the config's adapter (r 8) holding per-rank state for two ranks, as DDP saves it."""
    path = other_rank_checkpoint(tmp, model, data, r=8)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["rank_states"] *= 2
    torch.save(checkpoint, path)
    return path


@contextlib.contextmanager
def no_4bit_kernel() -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("no 4-bit kernel for this device")

    with mock.patch("bitsandbytes.functional.quantize_4bit", refuse):
        yield


@contextlib.contextmanager
def disk_full() -> Iterator[None]:
    def full(path: Any, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with mock.patch("lit_lora.callbacks.results.atomic_write_json", full):
        yield


@contextlib.contextmanager
def slurm_rank_zero() -> Iterator[None]:
    """The environment ``srun`` gives rank 0 of ``sbatch --nodes 2 --ntasks-per-node 4``."""
    env = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "fit",
           "SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
           "SLURM_NODELIST": "node[0-1]"}  # fmt: skip
    with mock.patch.dict(os.environ, env):
        yield


def cases(model: Path, data: Path, gsm8k: Path) -> list[Case]:
    return [
        Case("unknown key", "model.adapter.rr: unknown key", lambda t: ["--model.adapter.rr", "3"]),
        Case("wrong type", "model.learning_rate: got 'fast', expected a value of type float",
             lambda t: ["--model.learning_rate", "fast"]),
        Case("missing folder", "no such directory", lambda t: ["--data.data_dir", str(t / "nowhere")]),
        Case("missing file", "no train file",
             lambda t: ["--data.data_dir", str(write_tsv(t / "d", {"dev": GOOD}))]),
        Case("missing column", "missing column 'sentence'", lambda t: [
            "--data.data_dir", str(write_tsv(t / "d", {"train": "text\tlabel\nfine\t1\n", "dev": GOOD}))]),
        Case("empty split", "train.tsv: no rows", lambda t: [
            "--data.data_dir", str(write_tsv(t / "d", {"train": "sentence\tlabel\n", "dev": GOOD}))]),
        Case("label out of range", "label 5 in column 'label' is out of range; allowed: 0..1", lambda t: [
            "--data.data_dir", str(write_tsv(t / "d", {"train": GOOD + "odd\t5\n", "dev": GOOD}))]),
        Case("unknown label name", "unknown label 'meh' in column 'label'", lambda t: [
            "--data.data_dir", str(write_tsv(t / "d", {"train": GOOD + "odd\tmeh\n", "dev": GOOD}))]),
        Case("target modules match nothing", "matches no layer of this model; its linear layers are",
             lambda t: ["--model.adapter.target_modules", "[q_proj]"]),
        Case("no EOS for a generation task", "has no eos token", lambda t: ["--data.data_dir", str(gsm8k)],
             config="configs/gsm8k_gpt2.yaml"),
        Case("max_length above the model's positions", "data.max_length=1024 exceeds the 512 positions",
             lambda t: ["--data.max_length", "1024"]),
        Case("adapter of another base model", "does not fit this base model",
             lambda t: ["--model.adapter_path", str(foreign_adapter(t))]),
        Case("checkpoint of another adapter", "checkpoint does not fit this model/adapter", lambda t: [
            "--ckpt_path", str(other_rank_checkpoint(t, model, data))]),
        Case("checkpoint of another number of ranks", "holds RNG and data-loader state for 2 rank(s)",
             lambda t: ["--ckpt_path", str(two_process_checkpoint(t, model, data))]),
        Case("4-bit where bitsandbytes has no kernel",
             "model.quantization.mode=nf4 is not supported on device",
             lambda t: ["--model.quantization.mode", "nf4"], patch=no_4bit_kernel),
        Case("accelerator that is not there", "can not run on your system since the accelerator is not",
             lambda t: ["--trainer.accelerator", "cuda", "--trainer.devices", "2"]),
        Case("DDP on an impossible device count", "trainer.devices=-3: `devices` selected with",
             lambda t: ["--config", "configs/extras/ddp.yaml", "--trainer.devices", "-3"]),
        Case("DeepSpeed on an impossible device count", "`Trainer(devices='0')` value is not a valid input",
             lambda t: ["--config", "configs/extras/deepspeed_zero2.yaml", "--trainer.devices", "0"]),
        Case("a method FSDP2 cannot train", "model.adapter=AdaLoraSpec with trainer.strategy=FSDP2",
             lambda t: ["--config", "configs/extras/fsdp.yaml", "--trainer.accelerator", "cpu"],
             config="configs/sst2_adalora.yaml"),
        Case("a precision FSDP2 lacks",
             "trainer.precision=16-mixed: The `ModelParallelStrategy` does not support",
             lambda t: ["--config", "configs/extras/fsdp.yaml", "--trainer.precision", "16-mixed"]),
        Case("SLURM tasks per node other than trainer.devices",
             "trainer.devices=1, trainer.num_nodes=2: You set `devices=1` in Lightning, but the number",
             lambda t: ["--config", "configs/extras/ddp.yaml", "--trainer.accelerator", "cpu",
                        "--trainer.num_nodes", "2"], patch=slurm_rank_zero),
        Case("AdaLoRA phases longer than the run", "leaves no budgeting phase",
             lambda t: ["--model.adapter.tinit", "5", "--model.adapter.tfinal", "5"],
             config="configs/sst2_adalora.yaml"),
        Case("fraction outside its declared range", "model.null_window_weight=2.0 must be a number in (0, 1]",
             lambda t: ["--model.null_window_weight", "2"], config="configs/squad_v2_lora.yaml"),
        Case("PiSSA on a 4-bit base", "PissaSpec cannot start from a model.quantization.mode=nf4",
             lambda t: ["--model.quantization.mode", "nf4"], config="configs/sst2_pissa.yaml"),
        Case("corrupt adapter file", "adapter_model.safetensors cannot be read",
             lambda t: ["--model.adapter_path", str(truncated_adapter(t, model))]),
        Case("output folder not writable", "cannot write there", lambda t: [
            "--trainer.default_root_dir", str(blocked_folder(t))]),
        Case("disk full while writing results", "No space left on device", patch=disk_full),
        Case("integer outside its declared range", "model.adapter.r=0 must be an integer >= 1",
             lambda t: ["--model.adapter.r", "0"]),
        Case("value not among the choices", "data.test_split: got 'dev', expected one of 'train'",
             lambda t: ["--data.test_split", "dev"]),
        Case("value none of a union's types takes",
             "data.max_train_samples: got 'many', expected a value of type int or null",
             lambda t: ["--data.max_train_samples", "many"]),
        Case("nested value outside its range", "model.adapter.rank_pattern[query]=0 must be an integer >= 1",
             lambda t: ["--model.adapter.rank_pattern", "{query: 0}"]),
        Case("tracker class that does not exist",
             "trainer.logger: class_path 'lightning.pytorch.loggers.MLflowLogger' cannot be imported (",
             lambda t: ["--trainer.logger.class_path", "lightning.pytorch.loggers.MLflowLogger"]),
        Case("tracker store not writable", "a_file/tensorboard: cannot write there (Not a directory)",
             lambda t: ["--config", str(tensorboard_extra(blocked_folder(t).parent / "tensorboard"))]),
        Case("W&B sweep agent with WANDB_DIR not writable",
             "WANDB_DIR=/dev/null/wandb: cannot write there (Not a directory)", patch=wandb_agent_blocked),
    ]  # fmt: skip


def blocked_folder(tmp: Path) -> Path:
    (tmp / "a_file").write_text("")
    return tmp / "a_file" / "runs"  # a folder inside a file: no permission trick needed as root


def tensorboard_extra(save_dir: Path) -> Path:
    """configs/extras/tensorboard.yaml with its store at ``save_dir`` (written next to it)."""
    extra = save_dir.parent.parent / "tensorboard.yaml"
    entry = {
        "class_path": "lit_lora.runtime.loggers.ClaimedTensorBoardLogger",
        "init_args": {"save_dir": str(save_dir)},
    }
    extra.write_text(json.dumps({"trainer": {"logger": [entry]}}))  # JSON is YAML
    return extra


@contextlib.contextmanager
def wandb_agent_blocked() -> Iterator[None]:
    """The environment ``wandb agent`` gives its run, with a WANDB_DIR inside a device file."""
    env = {
        "WANDB_SWEEP_ID": "s",
        "WANDB_RUN_ID": "r",
        "WANDB_MODE": "offline",
        "WANDB_DIR": "/dev/null/wandb",
    }
    with mock.patch.dict(os.environ, env):
        yield


def run_case(case: Case, model: Path, data: Path, tmp: Path) -> tuple[int, str]:
    """Exit status and stderr of ``python -m lit_lora fit`` with the case's arguments, in this process."""
    from lit_lora.__main__ import main

    args = [
        "fit", "--config", case.config, "--model.model_name_or_path", str(model),
        "--data.data_dir", str(data), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(tmp / "runs"), *case.args(tmp),
    ]  # fmt: skip
    stderr = io.StringIO()
    patch = case.patch() if case.patch else contextlib.nullcontext()
    with patch, contextlib.redirect_stderr(stderr):
        try:
            main(args)
            status = 0
        except SystemExit as stop:
            status = int(stop.code or 0)
    return status, stderr.getvalue()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lit_lora: error:")]


def make_fixtures(directory: Path, tokenizer_source: Path, shape: dict) -> tuple[Path, Path, Path]:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lit_lora.data.demo import write_demo_sentiment

    model = directory / "model"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **shape)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = write_demo_sentiment(directory / "data")
    gsm8k = directory / "gsm8k"
    gsm8k.mkdir()
    for split in ("train", "test"):
        (gsm8k / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return model, data, gsm8k


if __name__ == "__main__":
    import tempfile

    from tests.helpers import TINY, minilm_path

    scratch = Path(tempfile.mkdtemp())
    model, data, gsm8k = make_fixtures(scratch, minilm_path(), TINY)
    print("| bad input | message (exit status 2) |\n|---|---|")
    for number, case in enumerate(cases(model, data, gsm8k)):
        tmp = scratch / f"case{number}"
        tmp.mkdir()
        status, stderr = run_case(case, model, data, tmp)
        line = error_lines(stderr)[0].removeprefix("lit_lora: error: ").replace(str(scratch), "...")
        print(f"| {case.name} | `{line.replace('|', '/')}` |")
    shutil.rmtree(scratch, ignore_errors=True)
