"""Hand-written ``results.json`` records and the CSVs a report writes, for the report tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_result(directory: Path, stage: str = "fit", seed: int = 1, r: int = 8, **fields: Any) -> Path:
    """A results.json shaped like ResultsRecorder's, in ``directory/lightning_logs/version_0``."""
    record: dict[str, Any] = {
        "stage": stage,
        "config_name": "sst2_lora",
        "method": "lora",
        "quantization": "none",
        "ranks": {"r": r, "rank_pattern": {}},
        "metrics": {"val/acc": 0.8, "val/f1": 0.7},
        "parameters": {"trainable": 1000 * r, "total": 1_000_000, "trainable_pct": 0.1 * r},
        "peak_memory_mb": 500.0,
        "memory_kind": "cpu_peak_rss",
        "wall_time_s": 12.0,
        "train_time_s": 10.0,
        "samples_per_s": 30.0,
        "seed": seed,
        "device": "cpu",
        "precision": "32-true",
        "config": {
            "seed_everything": seed,
            "trainer": {"default_root_dir": f"runs/{directory.name}", "max_epochs": 1},
            "model": {"init_args": {"adapter": {"r": r, "alpha": 2 * r}}},
            "data": {"init_args": {"seed": seed}},
        },
    }
    record.update(fields)
    path = directory / "lightning_logs" / "version_0" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))
