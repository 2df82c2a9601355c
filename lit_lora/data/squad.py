"""SQuAD v2 extractive QA: questions with their contexts, cut into overlapping windows (features).

Each feature carries the answer's start/end token (the CLS token, index 0, when the question is
unanswerable or the answer is not inside this window). Evaluation features also carry what
post-processing needs (question id, character offsets of context tokens, context, gold answers);
the collate function pads the tensors and passes those through as lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets
from torch.utils.data import BatchSampler, DataLoader, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from lit_lora.core.ranges import PositiveInt
from lit_lora.data._squad_files import find_squad_file, load_squad_file
from lit_lora.data.base import Split, TextDataModule
from lit_lora.errors import LitLoraError

EVAL_COLUMNS = ("example_id", "offset_mapping", "context", "answer_texts")
CLS_INDEX = 0  # BERT-style tokenizers put the classification token first


@dataclass
class QACollator:
    """Pads the model inputs and positions; passes the evaluation metadata through as lists."""

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        tensors = [{k: v for k, v in f.items() if k not in EVAL_COLUMNS} for f in features]
        batch = dict(DataCollatorWithPadding(self.tokenizer)(tensors))
        for key in EVAL_COLUMNS:
            if key in features[0]:
                batch[key] = [f[key] for f in features]
        return batch


class ExampleBatchSampler(BatchSampler):
    """Batches of about ``batch_size`` features that never split one question's features.

    ``predict`` returns one answer per question from each batch, so a question's windows (consecutive
    in input order) must arrive together; a question with more windows than ``batch_size`` is a batch.
    """

    def __init__(
        self, sampler: Sampler[int], batch_size: int, drop_last: bool = False, example_ids: Any = None
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.example_ids = list(example_ids) if example_ids is not None else []

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        group: list[int] = []
        for index in self.sampler:
            if group and self.example_ids[index] != self.example_ids[group[0]]:
                if batch and len(batch) + len(group) > self.batch_size:
                    yield batch
                    batch = []
                batch, group = batch + group, []
            group.append(index)
        if batch and len(batch) + len(group) > self.batch_size:
            yield batch
            batch = []
        if batch or group:
            yield batch + group

    def __len__(self) -> int:
        return sum(1 for _ in iter(self))


class SquadV2DataModule(TextDataModule):
    """SQuAD 2.0 (hub ``rajpurkar/squad_v2``, or local files) for extractive question answering.

    Local files: a ``.json`` file is the official nested SQuAD format (``{data: [{title, paragraphs:
    [{context, qas: [{id, question, answers, is_impossible}]}]}]}``, v1.1 too); ``.jsonl`` and
    ``.parquet`` files hold flat rows as on the hub (``id``, ``context``, ``question``,
    ``answers: {text, answer_start}``; no ``answers`` to predict only). The hub release has no test
    split: its validation split serves.
    """

    hub_path = "rajpurkar/squad_v2"
    hub_splits: ClassVar[dict[str, str | None]] = {
        "train": "train",
        "validation": "validation",
        "test": "validation",
    }

    def __init__(
        self,
        *args: Any,
        max_length: PositiveInt = 384,
        doc_stride: PositiveInt = 128,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            max_length: Tokens per window (question + context); longer contexts become several windows.
            doc_stride: Tokens of context shared by consecutive windows of one long context.
            train_file: The training file; overrides data.data_dir and the hub for this split.
            validation_file: The validation file (also what `test` reads while test_split is
                validation); one file may serve as train, validation and test for a smoke run.
            test_file: The test file.
        """
        super().__init__(*args, max_length=max_length, **kwargs)
        if doc_stride >= max_length:
            raise LitLoraError(f"data.doc_stride={doc_stride} must be below data.max_length={max_length}")
        self.doc_stride = doc_stride
        self.files: dict[str, str | None] = {
            "train": train_file,
            "validation": validation_file,
            "test": test_file,
        }

    # ---- loading ----------------------------------------------------------------------------------

    def _split_file(self, split: Split) -> Path | None:
        explicit = self.files[split]
        if explicit is not None:
            path = Path(explicit).expanduser()
            if not path.is_file():
                raise LitLoraError(f"data.{split}_file={explicit}: no such file")
            return path
        local = self._local_dir()
        return find_squad_file(local, split) if local is not None else None

    def prepare_data(self) -> None:
        super().prepare_data()
        for split, name in self.files.items():
            if name is not None and not Path(name).expanduser().is_file():
                raise LitLoraError(f"data.{split}_file={name}: no such file")

    def _encoding_settings(self) -> dict[str, Any]:
        return {**super()._encoding_settings(), "doc_stride": self.doc_stride}

    def _has_validation_split(self) -> bool:
        if self._split_file("validation") is not None:
            return True
        # Files named one by one: a missing validation file is held out from train, not fetched.
        return not any(self.files.values()) and super()._has_validation_split()

    def _load_raw(self, split: Split) -> tuple[datasets.Dataset, str]:
        path = self._split_file(split)
        if path is None:
            return super()._load_raw(split)
        return load_squad_file(path), str(path)

    def _prepare(self, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        for column in ("id", "context", "question"):
            if column not in raw.column_names:
                raise LitLoraError(f"{source}: missing column '{column}'; columns are {raw.column_names}")
        if "answers" not in raw.column_names:
            # Questions to predict on need no answers; scored, they would all count as unanswerable.
            raw = raw.add_column("answers", [{"text": [], "answer_start": []}] * len(raw))
        return raw

    def setup(self, stage: str) -> None:
        super().setup(stage)
        train = self.splits.get("train")
        if train is not None and "example_id" in train.column_names:
            # Training needs only inputs and positions; the metadata would just travel with every batch.
            self.splits["train"] = train.remove_columns(list(EVAL_COLUMNS))

    # ---- features ---------------------------------------------------------------------------------

    def _encode(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        # Some SQuAD questions start with spaces that only waste window room.
        questions = [q.lstrip() for q in rows["question"]]
        encoded = self.tokenizer(
            questions,
            rows["context"],
            truncation="only_second",
            max_length=self.max_length,
            stride=self.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        sample_map = encoded.pop("overflow_to_sample_mapping")
        offsets = encoded.pop("offset_mapping")
        columns: dict[str, list[Any]] = {k: [] for k in ("start_positions", "end_positions", *EVAL_COLUMNS)}
        for i, sample in enumerate(sample_map):
            in_context = [s == 1 for s in encoded.sequence_ids(i)]
            answers = rows["answers"][sample]
            start, end = answer_tokens(offsets[i], in_context, answers["text"], answers["answer_start"])
            columns["start_positions"].append(start)
            columns["end_positions"].append(end)
            columns["example_id"].append(rows["id"][sample])
            columns["offset_mapping"].append(
                [list(o) if inside else None for o, inside in zip(offsets[i], in_context, strict=True)]
            )
            columns["context"].append(rows["context"][sample])
            columns["answer_texts"].append(list(answers["text"]))
        return {**encoded, **columns}

    # ---- loaders ----------------------------------------------------------------------------------

    def _collate(self) -> Any:
        return QACollator(self.tokenizer)

    def predict_dataloader(self) -> DataLoader:
        # In input order, and each question's windows in one batch (so on one rank): one answer per
        # question per batch.
        data = self.splits[self.test_split]
        ids = data["example_id"]
        batches = list(ExampleBatchSampler(range(len(data)), self.eval_batch_size, example_ids=ids))
        return self._sharded_loader(self.test_split, batches)


def answer_tokens(
    offsets: list[tuple[int, int]], in_context: list[bool], texts: list[str], starts: list[int]
) -> tuple[int, int]:
    """Start and end token of the first gold answer in this window; (CLS, CLS) when it is not inside."""
    if not texts:
        return CLS_INDEX, CLS_INDEX
    start_char, end_char = starts[0], starts[0] + len(texts[0])
    context = [i for i, inside in enumerate(in_context) if inside]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return CLS_INDEX, CLS_INDEX
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end
