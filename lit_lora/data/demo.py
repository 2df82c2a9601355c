"""A small, seeded sentiment dataset that lit_lora writes itself, so the demo needs no download."""

from __future__ import annotations

import os
import random
from pathlib import Path

from lit_lora.core.io import atomic_write_text
from lit_lora.data.classification import SST2DataModule

POSITIVE = [
    "wonderful",
    "moving",
    "funny",
    "brilliant",
    "charming",
    "gripping",
    "delightful",
    "superb",
    "warm",
]
NEGATIVE = ["dull", "tedious", "clumsy", "boring", "shallow", "annoying", "lifeless", "awful", "bland"]
SUBJECTS = [
    "the film",
    "this movie",
    "the story",
    "the cast",
    "the script",
    "the ending",
    "the director's work",
]
TEMPLATES = [
    "{subject} is {adj} .",
    "{subject} felt {adj} from start to finish .",
    "i thought {subject} was {adj} .",
    "{subject} is not {anti} , it is {adj} .",
    "honestly , {subject} was rather {adj} .",
    "{subject} is {adj} and {adj2} .",
]
SPLIT_SIZES = {"train": 2000, "dev": 400, "test": 400}
VERSION = "v1"


def _sentence(rng: random.Random, label: int) -> str:
    same, other = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
    template = rng.choice(TEMPLATES)
    return template.format(
        subject=rng.choice(SUBJECTS), adj=rng.choice(same), adj2=rng.choice(same), anti=rng.choice(other)
    )


def write_demo_sentiment(directory: Path, seed: int = 0) -> Path:
    """Write train/dev/test tsv files (sentence, label) unless they are already there."""
    paths = {split: directory / f"{split}.tsv" for split in SPLIT_SIZES}
    if all(path.exists() for path in paths.values()):  # called for every split load: no regeneration
        return directory
    rng = random.Random(seed)
    for split, size in SPLIT_SIZES.items():
        path = paths[split]
        # Every split's rows are drawn even when its file exists, so each file's content never
        # depends on which others were missing.
        rows = [(label := rng.randint(0, 1), _sentence(rng, label)) for _ in range(size)]
        if not path.exists():
            atomic_write_text(path, "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for y, s in rows))
    return directory


def default_demo_dir() -> Path:
    cache = Path(os.environ.get("LIT_LORA_CACHE", Path.home() / ".cache" / "lit_lora"))
    return cache / f"demo_sentiment_{VERSION}"


class DemoSentimentDataModule(SST2DataModule):
    """SST-2-shaped synthetic sentiment data, generated on first use (2,000 / 400 / 400 rows)."""

    def _local_dir(self) -> Path:
        if self.data_dir is None:
            self.data_dir = str(default_demo_dir())
        directory = Path(self.data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return write_demo_sentiment(directory)
