"""Local split files: ``train``, ``dev``/``validation``, ``test`` in tsv, csv, jsonl/json, parquet or txt."""

from __future__ import annotations

import csv
from pathlib import Path

import datasets

from lit_lora.errors import LitLoraError

SPLIT_STEMS = {"train": ("train",), "validation": ("dev", "validation", "valid", "val"), "test": ("test",)}
# .txt: one row per line in a "text" column (WikiText).
FORMATS = {
    ".tsv": "csv",
    ".csv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "text",
}


def find_split_file(data_dir: Path, split: str) -> Path | None:
    """The file holding ``split`` in ``data_dir``, or None when there is none."""
    for stem in SPLIT_STEMS[split]:
        for suffix in FORMATS:
            candidate = data_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def require_split_file(data_dir: Path, split: str) -> Path:
    path = find_split_file(data_dir, split)
    if path is None:
        names = ", ".join(f"{s}{{{','.join(FORMATS)}}}" for s in SPLIT_STEMS[split])
        raise LitLoraError(f"data.data_dir={data_dir}: no {split} file; expected one of {names}")
    return path


def load_split_file(path: Path) -> datasets.Dataset:
    """Load one file as a ``datasets.Dataset`` (memory-mapped Arrow, cached by datasets)."""
    builder = FORMATS[path.suffix]
    kwargs: dict[str, object] = {}
    if path.suffix == ".tsv":
        # Sentences hold bare quotes (SST-2: `" ... "`), so quoting must be off for tab files.
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    try:
        return datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **kwargs)
    except Exception as err:  # pandas/pyarrow raise many types for a malformed file
        if "corresponds to no data" in str(err):  # datasets' words for a file with a header alone
            raise LitLoraError(f"{path}: no rows") from err
        raise LitLoraError(
            f"{path}: cannot be read as {path.suffix[1:]} ({type(err).__name__}: {err})"
        ) from err


def check_data_dir(data_dir: str | None) -> Path | None:
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise LitLoraError(f"data.data_dir={data_dir}: no such directory")
    return path
