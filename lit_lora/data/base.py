"""What every lit_lora DataModule shares: hub name or local files, cached tokenisation, batching by length."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import datasets
import lightning as L
import torch
from datasets.fingerprint import Hasher
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase

from lit_lora.core.hub import resolve_model_path
from lit_lora.core.ranges import (
    NonNegativeInt,
    OptionalPositiveInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    check_init_arguments,
)
from lit_lora.data.files import check_data_dir, find_split_file, load_split_file, require_split_file
from lit_lora.data.sampler import LengthGroupedSampler, ShardedBatches, chunk
from lit_lora.errors import LitLoraError

Split = Literal["train", "validation", "test"]
HOLDOUT_SEED = 0  # one validation slice for every run seed, so that runs select on the same rows
HOLDOUT_CAP = 2000


def holdout_rows(num_rows: int, size: float) -> list[int]:
    """Seeded, sorted row indices of train held out for validation: ``size`` a fraction or a count."""
    count = min(round(size * num_rows), HOLDOUT_CAP) if size < 1 else int(size)
    count = min(max(count, 1), num_rows - 1)
    generator = torch.Generator(device="cpu").manual_seed(HOLDOUT_SEED)
    return sorted(torch.randperm(num_rows, generator=generator, device="cpu")[:count].tolist())


class TextDataModule(L.LightningDataModule):
    """Loads a task's splits from the hub (``hub_path``) or from ``data_dir`` and tokenises them.

    Subclasses say which hub dataset they read and implement ``_prepare`` (check and normalise a
    raw split) and ``_encode`` (tokenise a batch of rows).
    """

    hub_path: ClassVar[str]
    hub_config: ClassVar[str | None] = None
    # The hub split read for each split; None where the release has none (validation is then held out
    # from train, never read from test).
    hub_splits: ClassVar[dict[str, str | None]] = {
        "train": "train",
        "validation": "validation",
        "test": "test",
    }

    def __init__(
        self,
        tokenizer_name: str = "",
        data_dir: str | None = None,
        max_length: PositiveInt = 128,
        batch_size: PositiveInt = 32,
        eval_batch_size: OptionalPositiveInt = None,
        max_train_samples: OptionalPositiveInt = None,
        max_eval_samples: OptionalPositiveInt = None,
        test_split: Split = "validation",
        group_by_length: bool = True,
        num_workers: NonNegativeInt = 0,
        seed: Seed = 42,
        validation_holdout: PositiveFloat = 0.05,
        trust_remote_code: bool = False,
    ) -> None:
        """
        Args:
            tokenizer_name: Tokenizer hub name or directory; linked to model.model_name_or_path by the CLI.
            data_dir: Local folder with train / dev (or validation) / test files; None reads the hub dataset.
            max_length: Longest tokenised input; longer ones are truncated.
            batch_size: Training batch size.
            eval_batch_size: Evaluation batch size; None uses twice batch_size.
            max_train_samples: Keep only the first N training rows.
            max_eval_samples: Keep only the first N rows of each evaluation split.
            test_split: The split that `test` and `predict` read. GLUE's own test split has no labels,
                so the default is validation.
            group_by_length: Batch training rows of similar length together (less padding, same
                randomness per epoch); evaluation is always sorted by length.
            num_workers: DataLoader worker processes.
            seed: Seed of the training order (each epoch reshuffles from seed + epoch).
            validation_holdout: Where the data has no dev/validation split: the rows of train held out
                for validation (checkpoint selection, early stopping, sweeps), a fraction (below 1, at
                most 2,000 rows) or a count; the same rows for every seed. Validation never reads test.
            trust_remote_code: Run tokenizer code shipped with a hub repository; linked to
                model.trust_remote_code by the CLI.
        """
        super().__init__()
        check_init_arguments(self, "data.")  # this class's and every subclass's: lit_lora/core/ranges.py
        self.tokenizer_name = tokenizer_name
        self.data_dir = data_dir
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.test_split = test_split
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.seed = seed
        self.validation_holdout = validation_holdout
        self.trust_remote_code = trust_remote_code
        self.validation_source: str | None = None
        self.splits: dict[str, datasets.Dataset] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._tokenizer_hash: str | None = None

    # ---- task hooks -------------------------------------------------------------------------------

    def _prepare(self, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        """Check columns and values of a raw split (``source`` names it in errors) and normalise it."""
        raise NotImplementedError

    def _encode(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Tokenise a batch of prepared rows into model inputs."""
        raise NotImplementedError

    # ---- loading ----------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            path = resolve_model_path(self.tokenizer_name)
            self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def _local_dir(self) -> Path | None:
        return check_data_dir(self.data_dir)

    def _load_raw(self, split: Split) -> tuple[datasets.Dataset, str]:
        local = self._local_dir()
        if local is not None:
            path = find_split_file(local, split)
            stand_in = self.hub_splits[split]
            if path is None and stand_in not in (None, split):
                # A release whose test is its validation split (SQuAD v2): the same stand-in locally.
                path = find_split_file(local, stand_in)
            path = path or require_split_file(local, split)
            return load_split_file(path), str(path)
        name = f"{self.hub_path}/{self.hub_config}" if self.hub_config else self.hub_path
        return datasets.load_dataset(
            self.hub_path, self.hub_config, split=self.hub_splits[split]
        ), f"{name}[{split}]"

    def prepare_data(self) -> None:
        # Runs on one process: validates the data source before any worker starts.
        self._local_dir()

    def _stage_splits(self, stage: str) -> list[Split]:
        return {
            "fit": ["train", "validation"],
            "validate": ["validation"],
            "test": [self.test_split],
            "predict": [self.test_split],
        }[stage]

    def _has_validation_split(self) -> bool:
        local = self._local_dir()
        if local is not None:
            return find_split_file(local, "validation") is not None
        return self.hub_splits["validation"] is not None

    def _split_rows(self, split: Split) -> tuple[datasets.Dataset, str]:
        """The raw rows of ``split``: validation without a split of its own is held out from train."""
        if split == "test" or self._has_validation_split():
            raw, source = self._load_raw(split)
            if split == "validation":
                self.validation_source = source
            return raw, source
        train, source = self._load_raw("train")
        held_out = holdout_rows(len(train), self.validation_holdout)
        if split == "validation":
            self.validation_source = f"{len(held_out)} rows held out from {source} (seed {HOLDOUT_SEED})"
            rank_zero_info(f"no validation split: validation is {self.validation_source}")
            return train.select(held_out), f"{source} (held-out rows)"
        kept = sorted(set(range(len(train))) - set(held_out))
        return train.select(kept), source

    def setup(self, stage: str) -> None:
        for split in self._stage_splits(stage):
            if split in self.splits:
                continue
            raw, source = self._split_rows(split)
            if len(raw) == 0:
                raise LitLoraError(f"{source}: no rows")
            limit = self.max_train_samples if split == "train" else self.max_eval_samples
            if limit is not None:
                raw = raw.select(range(min(limit, len(raw))))
            prepared = self._prepare(raw, source)
            self.splits[split] = prepared.map(
                self._encode,
                batched=True,
                remove_columns=prepared.column_names,
                desc=f"Tokenising {split}",
                new_fingerprint=self._encoding_fingerprint(prepared),
            )

    def _encoding_settings(self) -> dict[str, Any]:
        """Everything besides the rows and the tokenizer that changes the tokens ``_encode`` makes."""
        return {"task": type(self).__qualname__, "max_length": self.max_length}

    def _encoding_fingerprint(self, prepared: datasets.Dataset) -> str:
        # datasets would hash ``self._encode`` with the whole DataModule (trainer, seed, output folder),
        # so every run of a sweep re-tokenised and cached another copy. The key is what makes tokens.
        return Hasher.hash([prepared._fingerprint, self._tokenizer_fingerprint(), self._encoding_settings()])

    def _tokenizer_fingerprint(self) -> str:
        if self._tokenizer_hash is None:
            self._tokenizer_hash = Hasher.hash(self.tokenizer)
        return self._tokenizer_hash

    # ---- loaders ----------------------------------------------------------------------------------

    def _collate(self) -> Any:
        return DataCollatorWithPadding(self.tokenizer)

    def _train_collate(self) -> Any:
        """How training batches are collated; evaluation and prediction always use ``_collate``."""
        return self._collate()

    def _lengths(self, split: str) -> list[int]:
        return [len(ids) for ids in self.splits[split]["input_ids"]]

    def _ranks(self) -> tuple[int, int]:
        """(number of ranks, this rank): each loader shards by itself (see data/sampler.py)."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        data = self.splits["train"]
        world, rank = self._ranks()
        if self.group_by_length:
            lengths = self._lengths("train")
            sampler = LengthGroupedSampler(lengths, self.batch_size, self.seed, num_replicas=world, rank=rank)
        else:
            # Plain shuffling is the one-token-bucket case of length grouping: same sharding and seeding.
            sampler = LengthGroupedSampler([0] * len(data), self.batch_size, self.seed, 1, world, rank)
        # Stateful: a checkpoint taken mid-epoch records how far the epoch got, so that a resumed run
        # continues with the next batch instead of replaying the epoch from its start.
        kwargs = self._loader_kwargs() | {"collate_fn": self._train_collate()}
        return StatefulDataLoader(data, batch_size=self.batch_size, sampler=sampler, **kwargs)

    def _sharded_loader(self, split: str, batches: list[list[int]]) -> DataLoader:
        world, rank = self._ranks()
        # Every rank runs the same number of batches (ZeRO-3 gathers weights in every forward); the
        # copies that even them out are skipped by the module (PeftModule.is_padding_batch).
        sampler = ShardedBatches(batches=batches, num_replicas=world, rank=rank, pad_batches=world > 1)
        return DataLoader(self.splits[split], batch_sampler=sampler, **self._loader_kwargs())

    def _eval_loader(self, split: str) -> DataLoader:
        # Metrics do not depend on order, so evaluate longest-first with minimal padding.
        lengths = self._lengths(split)
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        return self._sharded_loader(split, chunk(order, self.eval_batch_size))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        # Batches of consecutive rows: the predictions writer puts them back in input order.
        return self._sharded_loader(self.test_split, self._in_order(self.test_split))

    def _in_order(self, split: str) -> list[list[int]]:
        return chunk(range(len(self.splits[split])), self.eval_batch_size)

    def _loader_kwargs(self) -> dict[str, Any]:
        return {"collate_fn": self._collate(), "num_workers": self.num_workers}
