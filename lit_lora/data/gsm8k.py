"""GSM8K grade-school maths: question -> worked answer, loss on the answer only, scored by generation."""

from __future__ import annotations

from typing import Any, ClassVar

import datasets

from lit_lora.core.ranges import PositiveInt
from lit_lora.data.causal import IGNORE, CausalTextDataModule
from lit_lora.errors import LitLoraError
from lit_lora.metrics.gsm8k import normalise


class GSM8KDataModule(CausalTextDataModule):
    """GSM8K (hub ``openai/gsm8k``/``main``, or ``train``/``test`` .jsonl files with question and answer).

    A row is the prompt ``Question: <question>\\nAnswer:`` followed by `` <answer><eos>``; labels are -100
    on the prompt (and on padding), so the loss covers the answer and the end-of-sequence token only.
    Rows longer than ``max_length`` lose the end of their answer. Evaluation rows also carry the prompt
    alone, for greedy generation, and the reference number (after ``####``, as lm-evaluation-harness
    normalises it) for exact match.
    GSM8K has no validation split: unless a dev/validation file exists, validation is held out from
    train (``validation_holdout``), never read from test.
    """

    hub_path = "openai/gsm8k"
    hub_config = "main"
    hub_splits: ClassVar[dict[str, str | None]] = {"train": "train", "validation": None, "test": "test"}
    columns = ("question", "answer")

    def __init__(self, *args: Any, max_length: PositiveInt = 512, **kwargs: Any) -> None:
        """
        Args:
            max_length: Longest prompt + answer in tokens; longer rows lose the end of their answer.
        """
        super().__init__(*args, max_length=max_length, **kwargs)

    def _format_prompt(self, text: str) -> str:
        return f"Question: {text.strip()}\nAnswer:"

    def _prepare(self, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        for column in self.columns:
            if column not in raw.column_names:
                raise LitLoraError(f"{source}: missing column '{column}'; columns are {raw.column_names}")
        return raw.select_columns(list(self.columns))

    def _encode(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise LitLoraError(f"tokenizer {self.tokenizer_name} has no eos token: GSM8K answers must end")
        out: dict[str, list[Any]] = {
            k: [] for k in ("input_ids", "labels", "prompt_input_ids", "prompt", "reference")
        }
        for question, answer in zip(rows["question"], rows["answer"], strict=True):
            prompt = self._format_prompt(question)
            # Prompt and answer are tokenised apart so that the prompt's tokens are exactly those that
            # generation starts from; the answer begins with a space, a pre-token boundary.
            prompt_ids = self.tokenizer(prompt)["input_ids"][-self.max_length :]
            answer_ids = self.tokenizer(f" {answer.strip()}", add_special_tokens=False)["input_ids"] + [eos]
            ids = (prompt_ids + answer_ids)[: self.max_length]
            out["input_ids"].append(ids)
            out["labels"].append(([IGNORE] * len(prompt_ids) + answer_ids)[: self.max_length])
            out["prompt_input_ids"].append(prompt_ids)
            out["prompt"].append(prompt)
            out["reference"].append(normalise(answer.strip()))  # "... #### 1,000" -> "1000"
        return out
