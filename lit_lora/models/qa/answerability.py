"""An answerability head for extractive QA: one logit per window, "this window holds no answer".

The span logits decide "no answer" by how the CLS position scores against the best span; the head adds
a second opinion from the last hidden state at CLS alone, trained with binary cross-entropy. Its logit
is added to the null (CLS) score, so the usual margin (null score minus the best span's score) becomes
the span margin plus the head's log-odds, and the decoding, thresholds and confidences of
``_qa_decode`` apply unchanged; an untrained head (logit 0) leaves every decision as it was.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftConfig
from torch import nn

from lit_lora.errors import LitLoraError

HEAD_NAME = "answerability_head"  # attribute of the base model, and its key in PEFT's modules_to_save


def attach_head(base: nn.Module, dropout: float = 0.1) -> list[str]:
    """Give ``base`` a fresh head on its last hidden state at CLS; returns its module name."""
    embeddings = base.get_input_embeddings().weight
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(base.config.hidden_size, 1))
    setattr(base, HEAD_NAME, head.to(device=embeddings.device, dtype=embeddings.dtype))
    return [HEAD_NAME]


def null_logits(base: nn.Module, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per window, the head's logit for "no answer here" (PEFT's wrapper runs the trained copy)."""
    return getattr(base, HEAD_NAME)(hidden_states[-1][:, 0]).squeeze(-1).float()


def check_saved_adapter(adapter_path: str, wanted: bool) -> None:
    """Refuse an adapter whose head does not match ``model.answerability_head``: decoding would be wrong."""
    if not (Path(adapter_path) / "adapter_config.json").is_file():
        return  # building the model names what is missing
    saved = HEAD_NAME in (PeftConfig.from_pretrained(adapter_path).modules_to_save or [])
    if saved != wanted:
        raise LitLoraError(
            f"model.adapter_path={adapter_path} was trained {'with' if saved else 'without'} an "
            f"answerability head; set model.answerability_head={str(saved).lower()}"
        )
