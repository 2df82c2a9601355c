"""A tiny fit with a shipped tracker extra, and the CSV logger's metrics to compare each store with."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.paths import REPO

Series = dict[str, list[tuple[int, float]]]  # metric -> (step, value) in the order logged


def fit_with_extra(extra: str, tiny_bert: Path, tiny_sst2: Path, workdir: Path) -> Path:
    """``python -m lit_lora fit`` (in this process) of the tiny BERT with ``configs/extras/<extra>``,
    run from ``workdir`` so the extra's relative store paths land there; the run directory."""
    from lit_lora.cli import build_cli

    args = [
        "fit", "--config", str(REPO / "configs" / "sst2_lora.yaml"),
        "--config", str(REPO / "configs" / "extras" / extra),
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        build_cli(args)
    return workdir / "runs" / "sst2_lora" / "lightning_logs" / "version_0"


def csv_series(run: Path) -> Series:
    """Every metric of ``metrics.csv`` (epoch included, as Lightning logs it) with its steps."""
    series: Series = {}
    with open(run / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "step" and value != "":
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def record(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())
