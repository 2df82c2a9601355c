"""WikiText-2 language modelling: each split joined into one text and cut into fixed-length blocks."""

from __future__ import annotations

from typing import Annotated, Any

import datasets

from lit_lora.core.ranges import Range
from lit_lora.data.base import Split
from lit_lora.data.causal import CausalTextDataModule
from lit_lora.errors import LitLoraError


class WikiTextDataModule(CausalTextDataModule):
    """WikiText (hub ``wikitext``/``wikitext-2-raw-v1``, or ``train``/``valid``/``test`` .txt files).

    Every split is joined line by line into one text, tokenised once and cut into consecutive blocks
    of ``max_length`` tokens (the block size; the last, shorter block is kept, so every token of the
    split is scored). Labels are the inputs: the model shifts them, so a block of n tokens predicts
    n - 1. ``max_train_samples`` / ``max_eval_samples`` count lines. Batches stay padded (``packing``
    auto), and ``packing`` true is refused: blocks carry no padding to remove.
    """

    hub_path = "wikitext"
    hub_config = "wikitext-2-raw-v1"

    def __init__(
        self,
        *args: Any,
        max_length: Annotated[int, Range(ge=2)] = 512,
        train_on: Split = "train",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            max_length: Block size: tokens per training and evaluation sequence.
            train_on: The split that fit trains on. The shared offline WikiText-2 copy has no train
                file: train on validation there (validation then scores the training text) and report
                test perplexity, saying so.
        """
        super().__init__(*args, max_length=max_length, **kwargs)
        self.train_on = train_on
        if self.packing is True:
            raise LitLoraError(
                "data.packing=true: WikiText rows are max_length-token blocks with no padding to remove "
                "(packing them only makes attention span batch_size blocks); set data.packing=false"
            )

    def resolve_packing(self, model_packs_alone: bool) -> bool:
        return super().resolve_packing(False)  # nothing to gain: every block but the last is max_length

    def _load_raw(self, split: Split) -> tuple[datasets.Dataset, str]:
        return super()._load_raw(self.train_on if split == "train" else split)

    def _prepare(self, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        if "text" not in raw.column_names:
            raise LitLoraError(f"{source}: missing column 'text'; columns are {raw.column_names}")
        # Hub rows end in a newline, lines of a local file do not: give every line exactly one.
        text = "".join(line if line.endswith("\n") else f"{line}\n" for line in raw["text"])
        if not text.strip():
            raise LitLoraError(f"{source}: no text")
        return datasets.Dataset.from_dict({"text": [text]})

    def _encode(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        blocks: list[list[int]] = []
        for text in rows["text"]:
            # One long sequence on purpose: it is cut into blocks below, never fed whole.
            ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            blocks += [ids[i : i + self.max_length] for i in range(0, len(ids), self.max_length)]
        blocks = [b for b in blocks if len(b) > 1]  # a single token predicts nothing
        return {"input_ids": blocks, "labels": blocks}
