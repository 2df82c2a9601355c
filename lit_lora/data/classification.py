"""Text classification DataModules: one shared implementation, one small preset per task."""

from __future__ import annotations

from typing import Any, ClassVar

import datasets

from lit_lora.data.base import TextDataModule
from lit_lora.errors import LitLoraError


class ClassificationDataModule(TextDataModule):
    """Single-label classification of one text (or a text pair) per row.

    Labels may be integer ids or the class names in ``label_names``; ``num_labels`` feeds the model.
    """

    text_columns: ClassVar[tuple[str, ...]]
    label_column: ClassVar[str] = "label"
    label_names: ClassVar[tuple[str, ...]]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def _prepare(self, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        for column in (*self.text_columns, self.label_column):
            if column not in raw.column_names:
                raise LitLoraError(f"{source}: missing column '{column}'; columns are {raw.column_names}")
        labels = raw[self.label_column]
        if labels and isinstance(labels[0], str):
            ids = self._ids_from_names(labels, source)
            raw = raw.remove_columns(self.label_column).add_column(self.label_column, ids)
        self._check_label_range(raw[self.label_column], source)
        return raw

    def _ids_from_names(self, labels: list[str], source: str) -> list[int]:
        index = {name: i for i, name in enumerate(self.label_names)}
        index.update({str(i): i for i in range(self.num_labels)})
        unknown = sorted({label for label in labels if label not in index})
        if unknown:
            raise LitLoraError(
                f"{source}: unknown label '{unknown[0]}' in column '{self.label_column}'; "
                f"allowed: {list(self.label_names)} or 0..{self.num_labels - 1}"
            )
        return [index[label] for label in labels]

    def _check_label_range(self, labels: list[int], source: str) -> None:
        bad = [label for label in labels if not 0 <= int(label) < self.num_labels]
        if bad:
            hint = " (GLUE test splits are unlabelled: use data.test_split=validation)" if -1 in bad else ""
            raise LitLoraError(
                f"{source}: label {bad[0]} in column '{self.label_column}' is out of range; "
                f"allowed: 0..{self.num_labels - 1}{hint}"
            )

    def _encode(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        texts = [rows[column] for column in self.text_columns]
        encoded = self.tokenizer(*texts, truncation=True, max_length=self.max_length)
        encoded["labels"] = rows[self.label_column]
        return dict(encoded)


class SST2DataModule(ClassificationDataModule):
    """GLUE SST-2 sentiment (hub ``glue``/``sst2``, or local files with ``sentence`` and ``label``)."""

    hub_path = "glue"
    hub_config = "sst2"
    text_columns = ("sentence",)
    label_names = ("negative", "positive")


class AGNewsDataModule(ClassificationDataModule):
    """AG News topics (hub ``fancyzhx/ag_news``, or local files with ``text`` and ``label``).

    The release has no validation split: validation is held out from train (``validation_holdout``).
    """

    hub_path = "fancyzhx/ag_news"
    hub_splits: ClassVar[dict[str, str | None]] = {"train": "train", "validation": None, "test": "test"}
    text_columns = ("text",)
    label_names = ("World", "Sports", "Business", "Sci/Tech")
