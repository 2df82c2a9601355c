"""Data layer: local formats, column and label checks, length-grouped batching."""

from __future__ import annotations

import json
from functools import partial

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from lit_lora import LitLoraError
from lit_lora.data import AGNewsDataModule
from lit_lora.data.base import holdout_rows
from lit_lora.data.sampler import LengthGroupedSampler, ShardedBatches, chunk, is_padding_batch
from lit_lora.models.lm.token_window import WindowTokens
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


def test_without_a_dev_file_validation_is_held_out_from_train_never_read_from_test(tiny_bert, tmp_path):
    topics = ("World", "Sports", "Business", "Sci/Tech")
    rows = [(f"train row {i}", topics[i % 4]) for i in range(60)]
    write(tmp_path, "tsv", rows=rows, columns=("text", "label"))
    (tmp_path / "dev.tsv").unlink()  # the shared AG News copy has train.tsv and test.tsv only
    (tmp_path / "test.tsv").write_text("text\tlabel\ntest row\tWorld\n")
    splits = {}
    for seed in (1, 2):
        datamodule = AGNewsDataModule(tokenizer_name=str(tiny_bert), data_dir=str(tmp_path), seed=seed)
        datamodule.setup("fit")
        decode = partial(datamodule.tokenizer.decode, skip_special_tokens=True)
        splits[seed] = {k: [decode(ids) for ids in v["input_ids"]] for k, v in datamodule.splits.items()}
    train, validation = splits[1]["train"], splits[1]["validation"]
    assert len(validation) == 3 and len(train) == 57  # 5% of 60 rows
    assert not set(validation) & set(train) and "test row" not in validation
    assert set(validation) | set(train) == {f"train row {i}" for i in range(60)}
    assert splits[2] == splits[1]  # the same held-out rows whatever the run's seed
    assert "held out from" in datamodule.validation_source
    counted = AGNewsDataModule(tokenizer_name=str(tiny_bert), data_dir=str(tmp_path), validation_holdout=10)
    counted.setup("validate")
    assert len(counted.splits["validation"]) == 10


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


def test_length_grouped_sampler_ignores_the_default_device():
    # Lightning sizes the train loader inside torch.device(<accelerator>) (on a GPU: cuda), where a
    # CPU generator was refused; the order must not depend on that context either.
    lengths = [(i * 37) % 101 for i in range(200)]
    expected = list(LengthGroupedSampler(lengths, batch_size=10, seed=3))
    expected_holdout = holdout_rows(200, 0.1)
    with torch.device("meta"):
        sampler = LengthGroupedSampler(lengths, batch_size=10, seed=3)
        assert len(sampler) == 200 and list(sampler) == expected
        assert holdout_rows(200, 0.1) == expected_holdout


def test_training_batches_pad_less_than_random_batches(tiny_bert, shared_sst2):
    datamodule = sst2(tiny_bert, shared_sst2, max_train_samples=2000, batch_size=32, max_length=128)
    datamodule.setup("fit")
    grouped = sum(b["input_ids"].numel() for b in datamodule.train_dataloader())
    datamodule.group_by_length = False
    shuffled = sum(b["input_ids"].numel() for b in datamodule.train_dataloader())
    assert grouped < 0.7 * shuffled


def padded_tokens_per_row(batches: list[list[int]], lengths: list[int]) -> float:
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(len(b) for b in batches)


def test_length_grouped_sampler_gives_each_rank_whole_batches_of_similar_length():
    lengths = [(i * 37) % 101 for i in range(1003)]  # 100 full batches of 10 and one of 3
    one = LengthGroupedSampler(lengths, batch_size=10, seed=3)
    ranks = [LengthGroupedSampler(lengths, batch_size=10, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    batches = [r._batches() for r in ranks]
    assert len(batches[0]) == len(batches[1]) == 51  # 101 batches padded to 102, whole batches only
    assert len(ranks[0]) == sum(map(len, batches[0])) and list(ranks[0]) == [i for b in batches[0] for i in b]
    seen = [i for rank in batches for b in rank for i in b]
    assert set(seen) == set(range(1003)) and len(seen) == 1003 + 10  # one repeated batch pads
    assert len(batches[0][-1]) == 3 or len(batches[1][-1]) == 3  # the short batch comes last
    single = padded_tokens_per_row(one._batches(), lengths)
    for rank in batches:
        assert padded_tokens_per_row(rank, lengths) <= 1.5 * single
    ranks[0].set_epoch(1)
    assert ranks[0]._batches() != batches[0]


def test_ddp_rank_batches_pad_as_little_as_one_process_on_real_sst2(tiny_bert, shared_sst2):
    # Lightning's own DistributedSamplerWrapper reshuffled grouped rows: 82 tokens of spread per batch
    # on rank 0 of 2 against 1.75 in one process. Here each rank keeps the one-process padding.
    datamodule = sst2(tiny_bert, shared_sst2, max_train_samples=4000, batch_size=32, max_length=128)
    datamodule.setup("fit")
    lengths = datamodule._lengths("train")
    one = padded_tokens_per_row(LengthGroupedSampler(lengths, 32, seed=42)._batches(), lengths)
    for rank in (0, 1):
        sampler = LengthGroupedSampler(lengths, 32, seed=42, num_replicas=2, rank=rank)
        assert padded_tokens_per_row(sampler._batches(), lengths) <= 1.5 * one
    assert one < 0.7 * padded_tokens_per_row(chunk(list(range(len(lengths))), 32), lengths)


def test_evaluation_batches_score_every_row_once_on_any_number_of_ranks():
    batches = chunk(list(range(45)), 10)  # 4 full batches and one of 5
    for world in (1, 2, 3, 7):
        shard = partial(ShardedBatches, batches=batches, num_replicas=world, pad_batches=True)
        shards = [shard(rank=r) for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # the same number of forward passes on every rank
        real = [i for s in shards for b in list(s)[: s.real_batches] for i in b]
        assert sorted(real) == list(range(45))
        loader = DataLoader(range(45), batch_sampler=shards[-1])
        flags = [is_padding_batch(loader, i) for i in range(len(shards[-1]))]
        assert flags == [i >= shards[-1].real_batches for i in range(len(shards[-1]))]


def test_training_batches_that_only_even_out_the_ranks_are_flagged_on_any_number_of_ranks():
    lengths = [(i * 37) % 101 for i in range(1003)]  # 100 full batches of 10 and one of 3
    for world in (1, 2, 3, 7):
        real_rows = []
        for rank in range(world):
            sampler = LengthGroupedSampler(lengths, 10, seed=3, num_replicas=world, rank=rank)
            loader = StatefulDataLoader(range(1003), batch_size=10, sampler=sampler)
            batches = [batch.tolist() for batch in loader]
            assert batches == sampler._batches()  # the loader's batches are the sampler's
            real_rows += [i for n, b in enumerate(batches) if not is_padding_batch(loader, n) for i in b]
        assert sorted(real_rows) == list(range(1003))  # each row once; the repeats are all flagged


def test_tokenisation_cache_is_shared_by_runs_that_differ_only_in_seed_or_batching(tiny_bert, tmp_path):
    write(tmp_path, "tsv")
    first, second = sst2(tiny_bert, tmp_path, seed=1), sst2(tiny_bert, tmp_path, seed=2, batch_size=2)
    first.setup("fit"), second.setup("fit")
    cached = [d.splits["train"].cache_files for d in (first, second)]
    assert cached[0] and cached[0] == cached[1]  # the second run re-used the first run's tokens
    longer = sst2(tiny_bert, tmp_path, max_length=33)
    longer.setup("fit")
    assert longer.splits["train"].cache_files != cached[0]  # what changes tokens changes the key


def test_window_token_counts_cover_every_ranks_batches_of_the_window():
    lengths = [(i * 13) % 17 + 1 for i in range(50)]
    ranks = [LengthGroupedSampler(lengths, 4, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    windows = WindowTokens(ranks[0], lengths, accumulate=3)  # rank 0 counts for both ranks
    per_rank = [r.batches_of_rank(0, r.rank) for r in ranks]  # 7 batches each (50 rows, padded to 56)
    for batch_idx in range(7):
        start = batch_idx // 3 * 3
        expected = sum(lengths[i] for batches in per_rank for b in batches[start : start + 3] for i in b)
        assert windows(0, batch_idx) == expected
