"""Data layer: local formats, column and label checks, length-grouped batching."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lit_lora import LitLoraError
from lit_lora.data import AGNewsDataModule
from lit_lora.data.sampler import LengthGroupedSampler
from tests.helpers import sst2

ROWS = [("a charming film .", 1), ('a " dull " film', 0), ("superb", 1), ("awful , awful", 0)]


def write(directory, fmt: str, rows=ROWS, columns=("sentence", "label")) -> None:
    frame = pd.DataFrame(rows, columns=list(columns))
    for stem in ("train", "dev", "test"):
        path = directory / f"{stem}.{fmt}"
        if fmt == "tsv":
            path.write_text("\t".join(columns) + "\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
        elif fmt == "csv":
            frame.to_csv(path, index=False)
        elif fmt == "jsonl":
            path.write_text("".join(json.dumps(dict(zip(columns, r, strict=True))) + "\n" for r in rows))
        else:
            frame.to_parquet(path)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl", "parquet"])
def test_every_local_format_loads_the_same_rows(tiny_bert, tmp_path, fmt):
    write(tmp_path, fmt)
    datamodule = sst2(tiny_bert, tmp_path, test_split="test")
    datamodule.setup("fit")
    datamodule.setup("test")
    train = datamodule.splits["train"]
    assert train["labels"] == [1, 0, 1, 0]
    decoded = datamodule.tokenizer.decode(train[1]["input_ids"], skip_special_tokens=True)
    assert decoded == 'a " dull " film'  # quotes inside a tsv field survive
    assert len(datamodule.splits["test"]) == 4


def test_validation_file_may_be_named_validation(tiny_bert, tmp_path):
    write(tmp_path, "tsv")
    (tmp_path / "dev.tsv").rename(tmp_path / "validation.tsv")
    datamodule = sst2(tiny_bert, tmp_path)
    datamodule.setup("validate")
    assert len(datamodule.splits["validation"]) == 4


def test_missing_data_dir_names_it(tiny_bert, tmp_path):
    with pytest.raises(LitLoraError, match=r"data.data_dir=.*nowhere: no such directory"):
        sst2(tiny_bert, tmp_path / "nowhere").setup("fit")


def test_missing_split_file_lists_the_names_allowed(tiny_bert, tmp_path):
    write(tmp_path, "tsv")
    (tmp_path / "test.tsv").unlink()
    with pytest.raises(LitLoraError, match=r"no test file; expected one of test\{.tsv,.csv"):
        sst2(tiny_bert, tmp_path, test_split="test").setup("test")


def test_missing_column_names_file_and_column(tiny_bert, tmp_path):
    write(tmp_path, "tsv", columns=("text", "label"))
    with pytest.raises(
        LitLoraError, match=r"train.tsv: missing column 'sentence'; columns are \['text', 'label'\]"
    ):
        sst2(tiny_bert, tmp_path).setup("fit")


def test_label_out_of_range_names_value_and_range(tiny_bert, tmp_path):
    write(tmp_path, "tsv", rows=[*ROWS, ("odd", 2)])
    with pytest.raises(
        LitLoraError, match=r"train.tsv: label 2 in column 'label' is out of range; allowed: 0..1"
    ):
        sst2(tiny_bert, tmp_path).setup("fit")


def test_unlabelled_test_split_hints_at_validation(tiny_bert, tmp_path):
    write(tmp_path, "tsv", rows=[("x", -1)])
    with pytest.raises(LitLoraError, match="GLUE test splits are unlabelled"):
        sst2(tiny_bert, tmp_path, test_split="test").setup("test")


def test_string_labels_map_to_class_ids(tiny_bert, tmp_path):
    rows = [
        ("stocks fall", "Business"),
        ("cup final", "Sports"),
        ("new chip", "Sci/Tech"),
        ("summit", "World"),
    ]
    write(tmp_path, "tsv", rows=rows, columns=("text", "label"))
    datamodule = AGNewsDataModule(tokenizer_name=str(tiny_bert), data_dir=str(tmp_path))
    datamodule.setup("fit")
    assert datamodule.splits["train"]["labels"] == [2, 1, 3, 0]
    assert datamodule.num_labels == 4


def test_local_data_without_dev_file_validates_on_test_like_the_hub_release(tiny_bert, tmp_path):
    rows = [("stocks fall", "Business"), ("cup final", "Sports")]
    write(tmp_path, "tsv", rows=rows, columns=("text", "label"))
    (tmp_path / "dev.tsv").unlink()  # the shared AG News copy has train.tsv and test.tsv only
    datamodule = AGNewsDataModule(tokenizer_name=str(tiny_bert), data_dir=str(tmp_path))
    datamodule.setup("fit")
    assert datamodule.splits["validation"]["labels"] == [2, 1]
    sst2_dir = tmp_path / "sst2"
    sst2_dir.mkdir()
    write(sst2_dir, "tsv")
    (sst2_dir / "dev.tsv").unlink()
    with pytest.raises(LitLoraError, match="no validation file"):
        sst2(tiny_bert, sst2_dir).setup("fit")  # SST-2 has a real validation split: no stand-in


def test_unknown_string_label_lists_allowed_names(tiny_bert, tmp_path):
    write(tmp_path, "tsv", rows=[("x", "Politics")], columns=("text", "label"))
    with pytest.raises(LitLoraError, match=r"unknown label 'Politics'.*allowed: \['World', 'Sports'"):
        AGNewsDataModule(tokenizer_name=str(tiny_bert), data_dir=str(tmp_path)).setup("fit")


def test_length_grouped_sampler_is_a_seeded_permutation_of_similar_length_batches():
    lengths = [(i * 37) % 101 for i in range(1000)]
    sampler = LengthGroupedSampler(lengths, batch_size=10, seed=3, mega_batches=50)
    first = list(sampler)
    assert sorted(first) == list(range(1000))
    assert list(sampler) == first  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != first
    spread = [
        max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in zip(*[iter(first)] * 10, strict=True)
    ]
    assert sum(spread) / len(spread) < 5  # random batches of 10 would spread ~80


def test_training_batches_pad_less_than_random_batches(tiny_bert, shared_sst2):
    datamodule = sst2(tiny_bert, shared_sst2, max_train_samples=2000, batch_size=32, max_length=128)
    datamodule.setup("fit")
    grouped = sum(b["input_ids"].numel() for b in datamodule.train_dataloader())
    datamodule.group_by_length = False
    shuffled = sum(b["input_ids"].numel() for b in datamodule.train_dataloader())
    assert grouped < 0.7 * shuffled
