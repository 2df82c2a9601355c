"""The contenders of ``benchmarks/sft_vs_trl.py`` that are not lit_lora, its meters and its shared evaluation.

    python benchmarks/_sft_contenders.py '<Spec as JSON>'    # trl, trl_packing, trl_padding_free, hf_peft

Each contender runs in a process of its own, so that its peak memory is its own. lit_lora runs through
its CLI instead and reports through ``LightningMeter``, a callback added on its command line; the others
report through the same ``Meter`` around their ``training_step``. Every contender leaves ``meter.json``
and a PEFT adapter (``adapter/``) in its output folder, and ``heldout_loss`` scores every adapter alike.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's lit_lora, not another one installed in editable mode

import datasets  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, TaskType, get_peft_model  # noqa: E402

from lit_lora.core.hub import resolve_model_path  # noqa: E402
from lit_lora.core.io import atomic_write_json  # noqa: E402
from lit_lora.metrics.language_model import IGNORE  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Every linear projection of a Llama decoder block: what lit_lora's `target_modules: null` resolves to.
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Row = dict[str, str]  # a GSM8K row: question, answer


@dataclass
class Spec:
    """What one contender process trains: the same budget and hyper-parameters for every contender."""

    contender: str
    seed: int
    train_file: str
    out: str
    batch_size: int
    max_length: int
    learning_rate: float
    warmup_ratio: float
    r: int
    alpha: int
    dropout: float
    accelerator: str
    precision: str  # "32" or "bf16"


def read_jsonl(path: Path | str, limit: int | None = None) -> list[Row]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()][:limit]


def chat(row: Row) -> list[dict[str, str]]:
    return [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]


def chat_ids(tokenizer: Any, row: Row) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (template, user turn, generation prompt) and of the whole conversation."""

    def ids(messages: list[dict[str, str]], prompt: bool) -> list[int]:
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=prompt, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    prompt, full = ids(chat(row)[:1], True), ids(chat(row), False)
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently inside the whole conversation")
    return prompt, full


# ---- measuring ------------------------------------------------------------------------------------


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # CUDA runs ahead of the host: time the work, not its queueing


class Meter:
    """Rows, tokens (padded, real, loss-bearing) and wall time of one training loop."""

    def __init__(self) -> None:
        self.rows = self.padded_tokens = self.tokens = self.loss_tokens = 0
        self.train_s = self.train_cpu_s = 0.0

    def add(self, batch: Mapping[str, torch.Tensor]) -> None:
        ids = batch["input_ids"]
        self.padded_tokens += ids.numel()
        if "attention_mask" in batch:
            self.tokens += int(batch["attention_mask"].sum())
            self.rows += ids.shape[0]
        else:  # padding-free: the batch is one flat row; each sequence restarts its positions at 0
            self.tokens += ids.numel()
            self.rows += int((batch["position_ids"] == 0).sum())
        self.loss_tokens += int((batch["labels"] != IGNORE).sum())

    def start(self) -> None:
        _sync()
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        _sync()
        self.train_s = time.perf_counter() - self._t0
        # Every thread of this process: on a shared machine, steadier than wall time.
        self.train_cpu_s = time.process_time() - self._c0

    def write(self, path: Path | str, model: torch.nn.Module, steps: int) -> None:
        params = list(model.parameters())
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        record = {
            "rows": self.rows, "padded_tokens": self.padded_tokens, "tokens": self.tokens,
            "loss_tokens": self.loss_tokens, "train_s": round(self.train_s, 3),
            "train_cpu_s": round(self.train_cpu_s, 3), "steps": steps,
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
        }  # fmt: skip
        atomic_write_json(Path(path), record)


class LightningMeter(L.Callback):
    """lit_lora's side: added with ``--trainer.callbacks+=`` to ``python -m lit_lora fit``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.meter = Meter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter.start()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        self.meter.add(batch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter.stop()
        self.meter.write(self.out, pl_module, trainer.global_step)


class _Timer(transformers.TrainerCallback):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self.meter.start()

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.meter.stop()


def metered(trainer_class: type[transformers.Trainer]) -> type[transformers.Trainer]:
    """``trainer_class`` counting every training batch as it arrives (callbacks never see batches)."""

    class Metered(trainer_class):  # type: ignore[misc, valid-type]
        meter: Meter

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.meter.add(inputs)
            return super().training_step(model, inputs, *args, **kwargs)

    return Metered


# ---- the contenders ------------------------------------------------------------------------------


def training_args(spec: Spec, args_class: type[transformers.TrainingArguments], **extra: Any) -> Any:
    """The hyper-parameters lit_lora runs with, spelt for transformers; TRL's other defaults stay."""
    settings = dict(
        output_dir=str(Path(spec.out) / "trainer"), per_device_train_batch_size=spec.batch_size,
        num_train_epochs=1, learning_rate=spec.learning_rate, lr_scheduler_type="linear",
        warmup_steps=spec.warmup_ratio,  # below 1: a share of the steps, rounded up as lit_lora does
        weight_decay=0.0, max_grad_norm=1.0, seed=spec.seed, data_seed=spec.seed,
        # SFTConfig defaults to bf16 and gradient checkpointing: both contenders run alike instead
        # (the memory mode's variants turn checkpointing back on, as lit_lora's low_memory.yaml does).
        bf16=spec.precision == "bf16", gradient_checkpointing=False, use_cpu=spec.accelerator == "cpu",
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    return args_class(**(settings | extra))


def lora(spec: Spec) -> LoraConfig:
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=TARGETS,
    )  # fmt: skip


def hf_peft(spec: Spec, model: Any, tokenizer: Any, rows: list[Row]) -> transformers.Trainer:
    """The usual recipe: prompt-masked labels, get_peft_model, padding collator, plain Trainer."""

    def encode(row: Row) -> dict[str, list[int]]:
        prompt, full = chat_ids(tokenizer, row)
        labels = [IGNORE] * len(prompt) + full[len(prompt) :]
        return {"input_ids": full[: spec.max_length], "labels": labels[: spec.max_length]}

    data = datasets.Dataset.from_list([encode(row) for row in rows])
    transformers.set_seed(spec.seed)
    collator = transformers.DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)
    return metered(transformers.Trainer)(
        model=get_peft_model(model, lora(spec)), args=training_args(spec, transformers.TrainingArguments),
        train_dataset=data, data_collator=collator,
    )  # fmt: skip


TRL_VARIANTS: dict[str, dict[str, Any]] = {
    "trl": {},
    "trl_packing": {"packing": True},  # best-fit-decreasing packing, which also makes batches padding-free
    # TRL refuses padding_free without packing unless max_length is None: rows then go in untruncated.
    "trl_padding_free": {"padding_free": True, "max_length": None},
    # Its least memory: padding-free batches, non-reentrant gradient checkpointing, and (CUDA only) saved
    # activations offloaded to the CPU. TRL's loss ("nll") is already computed chunk by chunk from the
    # hidden states (its fused lm_head), so no loss option lowers memory further.
    "trl_low_memory": {
        "padding_free": True,
        "max_length": None,
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    },
}


def trl(spec: Spec, model: Any, tokenizer: Any, rows: list[Row]) -> transformers.Trainer:
    """TRL's SFTTrainer on conversational prompt/completion rows: completion-only loss by default."""
    from trl import SFTConfig, SFTTrainer

    pairs = [{"prompt": chat(row)[:1], "completion": chat(row)[1:]} for row in rows]
    variant = dict(TRL_VARIANTS[spec.contender])
    if variant.get("gradient_checkpointing") and spec.accelerator == "cuda":
        variant["activation_offloading"] = True
    args = training_args(spec, SFTConfig, **{"max_length": spec.max_length, **variant})
    return metered(SFTTrainer)(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(pairs), processing_class=tokenizer,
        peft_config=lora(spec),
    )  # fmt: skip


def run(spec: Spec) -> None:
    path = resolve_model_path(MODEL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    torch.manual_seed(spec.seed)  # the LoRA initialisation
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    build = hf_peft if spec.contender == "hf_peft" else trl
    trainer = build(spec, model, tokenizer, read_jsonl(spec.train_file))
    meter = trainer.meter = Meter()  # type: ignore[attr-defined]
    trainer.add_callback(_Timer(meter))
    trainer.train()
    trainer.model.save_pretrained(Path(spec.out) / "adapter")
    meter.write(Path(spec.out) / "meter.json", trainer.model, trainer.state.global_step)


# ---- the shared evaluation -----------------------------------------------------------------------


def eval_ids(tokenizer: Any, row: Row) -> tuple[list[int], list[int]]:
    """The conversation through the reply's end-of-turn token, with labels on the reply and that token.

    The template's newline after the end-of-turn token is left out: lit_lora does not train on it.
    """
    prompt, full = chat_ids(tokenizer, row)
    reply = full[len(prompt) :]
    if tokenizer.eos_token_id in reply:
        reply = reply[: reply.index(tokenizer.eos_token_id) + 1]
    return prompt + reply, [IGNORE] * len(prompt) + reply


@torch.no_grad()
def heldout_loss(
    adapter: Path | None, rows: list[Row], device: str, batch_size: int = 4
) -> tuple[float, int]:
    """Mean NLL per assistant token of ``rows`` (not truncated) under base + adapter; and the token count."""
    path = resolve_model_path(MODEL)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.to(device).eval()
    encoded = [eval_ids(tokenizer, row) for row in rows]
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in chunk], device=device)
        labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in chunk], device=device)
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets = labels[:, 1:]
        total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="sum"))
        count += int((targets != IGNORE).sum())
    return total / count, count


if __name__ == "__main__":
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bar()
    run(Spec(**json.loads(sys.argv[1])))
