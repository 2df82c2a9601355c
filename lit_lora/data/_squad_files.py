"""Reading SQuAD files: the official nested JSON format, flattened to one row per question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from lit_lora.data.files import SPLIT_STEMS, find_split_file, load_split_file
from lit_lora.errors import LitLoraError

QUESTION_COLUMNS = ("id", "title", "context", "question", "answers")
# Declared, not inferred: a batch of only unanswerable questions would otherwise type answers as null.
QUESTION_FEATURES = datasets.Features(
    {
        **{column: datasets.Value("string") for column in QUESTION_COLUMNS[:4]},
        "answers": {
            "text": datasets.Sequence(datasets.Value("string")),
            "answer_start": datasets.Sequence(datasets.Value("int32")),
        },
    }
)


def find_squad_file(data_dir: Path, split: str) -> Path:
    """``train.json``/``dev.json``/... as for every task, else the official ``train-v2.0.json`` style."""
    found = find_split_file(data_dir, split)
    if found is not None:
        return found
    official = sorted(p for stem in SPLIT_STEMS[split] for p in data_dir.glob(f"{stem}-v*.json"))
    if len(official) == 1:
        return official[0]
    if len(official) > 1:
        names = ", ".join(p.name for p in official)
        raise LitLoraError(
            f"data.data_dir={data_dir}: several {split} files ({names}); set data.{split}_file"
        )
    stems = "/".join(SPLIT_STEMS[split])
    raise LitLoraError(
        f"data.data_dir={data_dir}: no {split} file; expected {stems}.json (or -v2.0.json), .jsonl or "
        f".parquet, or set data.{split}_file"
    )


def flatten_articles(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Articles -> questions, with ``answers`` as on the hub: ``{text: [...], answer_start: [...]}``."""
    rows: dict[str, list[Any]] = {column: [] for column in QUESTION_COLUMNS}
    for title, paragraphs in zip(batch["title"], batch["paragraphs"], strict=True):
        for paragraph in paragraphs:
            for qa in paragraph["qas"]:
                answers = qa.get("answers") or []  # unanswerable questions list none
                rows["id"].append(qa["id"])
                rows["title"].append(title)
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append(
                    {
                        "text": [a["text"] for a in answers],
                        "answer_start": [a["answer_start"] for a in answers],
                    }
                )
    return rows


def load_squad_file(path: Path) -> datasets.Dataset:
    """A ``.json`` file in the official format, flattened; other formats as flat rows."""
    if path.suffix != ".json":
        return load_split_file(path)
    try:
        articles = datasets.load_dataset("json", data_files={"data": str(path)}, field="data", split="data")
    except Exception as err:  # datasets raises several types for a file without a `data` list
        raise LitLoraError(
            f"{path}: not an official SQuAD JSON file ({type(err).__name__}: {err}); "
            "flat rows belong in .jsonl or .parquet"
        ) from err
    if "paragraphs" not in articles.column_names:
        raise LitLoraError(f"{path}: articles have no 'paragraphs'; columns are {articles.column_names}")
    return articles.map(
        flatten_articles,
        batched=True,
        remove_columns=articles.column_names,
        features=QUESTION_FEATURES,
        desc=f"Reading {path.name}",
    )
