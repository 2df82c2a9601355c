"""Several saved QA adapters on one base, evaluated as one model: their logits are averaged.

Each member is a PEFT adapter of its own name in the same ``PeftModel`` (its span head included), so the
frozen base is loaded once and each batch costs one forward per member. Averaging the start and end
logits before decoding, rather than weights (a "soup") or final answers (a vote), keeps the n-best
spans, the null margin and the threshold search of a single model. A member with an answerability head
adds its logit to the null score; one without adds 0, exactly as it would score alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from peft import PeftConfig, PeftModel
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from lit_lora.errors import LitLoraError
from lit_lora.methods import ADAPTER
from lit_lora.models.engine.build import load_more_adapter
from lit_lora.models.qa.answerability import HEAD_NAME, null_logits

KEY = "model.ensemble_adapter_paths"


class Member(NamedTuple):
    name: str  # the adapter's name inside the PeftModel
    path: str
    has_head: bool


def _config(path: str) -> PeftConfig:
    if not (Path(path) / "adapter_config.json").is_file():
        raise LitLoraError(f"{KEY}: {path}: no adapter_config.json there")
    return PeftConfig.from_pretrained(path)


def ensemble_members(adapter_path: str | None, more_paths: list[str], first_has_head: bool) -> list[Member]:
    """``adapter_path`` and ``more_paths`` as members, checked against each other from their configs."""
    if adapter_path is None:
        raise LitLoraError(f"{KEY} needs model.adapter_path: the ensemble's first member")
    first = _config(adapter_path)
    if first.peft_type != "LORA":
        raise LitLoraError(f"{KEY}: {adapter_path} is a {first.peft_type} adapter; ensembles take LoRA ones")
    members = [Member(ADAPTER, adapter_path, first_has_head)]
    for index, path in enumerate(more_paths, start=1):
        config = _config(path)
        for what, mine, theirs in (
            ("peft_type", config.peft_type, first.peft_type),
            ("task_type", config.task_type, first.task_type),
            ("base model", config.base_model_name_or_path, first.base_model_name_or_path),
        ):
            if mine != theirs:
                raise LitLoraError(
                    f"{KEY}: {path} has {what} {mine!s}, model.adapter_path {adapter_path} has {theirs!s}; "
                    "ensemble members share one base, task and PEFT method"
                )
        members.append(Member(f"member_{index}", path, HEAD_NAME in (config.modules_to_save or [])))
    return members


def load_members(model: PeftModel, members: list[Member]) -> None:
    """Load every member after the first (already ``model``'s default adapter), frozen."""
    for member in members[1:]:
        load_more_adapter(model, member.path, member.name, KEY)
    model.set_adapter(members[0].name, inference_mode=True)


def ensemble_outputs(
    model: PeftModel, members: list[Member], inputs: dict[str, Any]
) -> tuple[QuestionAnsweringModelOutput, torch.Tensor | None]:
    """Start and end logits averaged over the members, and their averaged null logits (None: no heads)."""
    starts, ends, nulls = [], [], []
    try:
        for member in members:
            model.set_adapter(member.name, inference_mode=True)
            outputs = model.base_model(**inputs, output_hidden_states=member.has_head)
            starts.append(outputs.start_logits.float())
            ends.append(outputs.end_logits.float())
            if member.has_head:
                nulls.append(null_logits(model.get_base_model(), outputs.hidden_states))
    finally:
        model.set_adapter(members[0].name, inference_mode=True)
    count = len(members)
    averaged = QuestionAnsweringModelOutput(
        start_logits=torch.stack(starts).mean(0), end_logits=torch.stack(ends).mean(0)
    )
    return averaged, torch.stack(nulls).sum(0) / count if nulls else None
