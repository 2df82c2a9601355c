"""What decoder (causal LM) DataModules share: padding, prompts for generation, a prompts file for predict."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithFlattening

from lit_lora.data.base import TextDataModule
from lit_lora.errors import LitLoraError

IGNORE = -100
PROMPT_FIELDS = ("prompt", "question", "text")  # looked up in this order in a .jsonl prompts file
Packing = bool | Literal["auto"]


class CausalCollator:
    """Right-pads ``input_ids`` / ``attention_mask`` / ``labels`` (-100) and left-pads ``prompt_input_ids``.

    Decoders generate after the last position, so prompts must end together: left padding. Text fields
    (``prompt``, ``reference``) pass through as lists.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    @staticmethod
    def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor(
            [[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows]
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        first, batch = features[0], {}
        if "input_ids" in first:
            ids = [list(f["input_ids"]) for f in features]
            batch["input_ids"] = self._pad(ids, self.pad_token_id)
            batch["attention_mask"] = self._pad([[1] * len(r) for r in ids], 0)
            batch["labels"] = self._pad([list(f["labels"]) for f in features], IGNORE)
        if "prompt_input_ids" in first:
            prompts = [list(f["prompt_input_ids"]) for f in features]
            batch["prompt_input_ids"] = self._pad(prompts, self.pad_token_id, left=True)
            batch["prompt_attention_mask"] = self._pad([[1] * len(r) for r in prompts], 0, left=True)
        for key in ("prompt", "reference"):
            if key in first:
                batch[key] = [f[key] for f in features]
        return batch


class TrainCollator:
    """Training batches padded or packed, as ``packed`` says when each batch is collated.

    Read per batch, not fixed when the loader is built: Lightning builds the training loader to count
    the schedule's steps before the model is there to settle ``data.packing: auto``.
    """

    def __init__(self, padded: Callable[[list[dict[str, Any]]], Any], packed: bool) -> None:
        self.padded = padded
        # transformers' own packing collator: positions restart at 0 per sequence, and each sequence's
        # first label is -100, so no sequence's last token is trained to predict the next one's first.
        self.flattened = DataCollatorWithFlattening(separator_id=IGNORE)
        self.packed = packed

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        return (self.flattened if self.packed else self.padded)(features)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line of a .txt file, or per row of a .jsonl file (its prompt/question/text field)."""
    if not path.is_file():
        raise LitLoraError(f"data.predict_file={path}: no such file")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        row = json.loads(line)
        field = next((f for f in PROMPT_FIELDS if f in row), None)
        if field is None:
            raise LitLoraError(
                f"{path}:{number}: no field among {list(PROMPT_FIELDS)}; fields are {list(row)}"
            )
        prompts.append(str(row[field]))
    return prompts


class CausalTextDataModule(TextDataModule):
    """Shared by decoder tasks: batches for :class:`~lit_lora.models.CausalLM`, prompts for ``predict``.

    Rows hold ``input_ids`` and ``labels`` (-100 where no loss is taken); rows meant for generation also
    hold ``prompt_input_ids`` and ``prompt`` (and ``reference`` when there is a gold answer).
    """

    def __init__(
        self, *args: Any, predict_file: str | None = None, packing: Packing = "auto", **kwargs: Any
    ) -> None:
        """
        Args:
            predict_file: Prompts for `predict`: a .txt file (one per line) or a .jsonl file (field prompt,
                question or text), formatted as the task formats its prompts; None predicts on test_split.
            packing: Padding-free training batches: each batch becomes one row of its sequences back to
                back, positions restarting at 0 for each; same rows, loss and gradients per step as padded
                batches, evaluation stays padded. auto: packed where each sequence attends alone (sdpa
                models of the families lit_lora/models/lm/packing.py allows), padded elsewhere; true:
                packed, refused at fit start where attention could cross sequences (eager attention runs
                over the whole row under a block-diagonal mask); false: padded. results.json says which.
        """
        super().__init__(*args, **kwargs)
        self.predict_file = predict_file
        self.packing = packing
        self.packed = packing is True  # what training batches are; the model settles auto at fit start
        self._train_collators: list[TrainCollator] = []  # every training loader's, told of the decision

    def resolve_packing(self, model_packs_alone: bool) -> bool:
        """Settle ``auto`` once the model is known: packed if it runs each packed sequence alone."""
        self.packed = model_packs_alone if self.packing == "auto" else bool(self.packing)
        for collator in self._train_collators:
            collator.packed = self.packed
        return self.packed

    def _format_prompt(self, text: str) -> str:
        """The text a model is given for a raw prompt or question (GSM8K adds 'Question: ... Answer:')."""
        return text

    def _prompt_row(self, prompt: str) -> dict[str, Any]:
        # Long prompts keep their end, the part the answer follows.
        ids = self.tokenizer(prompt)["input_ids"][-self.max_length :]
        return {"prompt_input_ids": ids, "prompt": prompt}

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predict_file is not None:
            prompts = [self._format_prompt(p) for p in read_prompts(Path(self.predict_file).expanduser())]
            rows = [self._prompt_row(p) for p in prompts]
            self.splits["predict"] = datasets.Dataset.from_list(rows)
            return
        super().setup(stage)

    def predict_dataloader(self) -> DataLoader:
        if "predict" not in self.splits:
            return super().predict_dataloader()
        return self._sharded_loader("predict", self._in_order("predict"))

    def _collate(self) -> CausalCollator:
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise LitLoraError(f"tokenizer {self.tokenizer_name} has neither a pad nor an eos token")
        return CausalCollator(pad)

    def _train_collate(self) -> TrainCollator:
        collator = TrainCollator(super()._train_collate(), self.packed)
        self._train_collators.append(collator)
        return collator
