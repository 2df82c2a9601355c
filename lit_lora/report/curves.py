"""The report's training curves: training loss and the main validation metric against optimizer steps.

Each counted run (completed, grouped as in the summary table: one config on one kind of device) is read
from the ``metrics.csv`` Lightning's CSVLogger wrote beside its ``results.json``. The x value is that
file's ``step`` column: Lightning logs at the count of batches that stepped the optimizer, so with
gradient accumulation it counts optimizer steps, not micro-batches. Each run is one line; each config
adds a mean line and a band of ± one sample standard deviation (ddof=1) over its seeds, drawn only at
the steps every one of its runs with a ``metrics.csv`` logged (so each point averages the same runs).
A run without a ``metrics.csv`` (its folder gone, or a logger other than CSV) is listed, not drawn.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from lit_lora.report.runs import Row, metric_names, stats

LOSS = "train/loss"


@dataclass
class Curves:
    """What ``curves.csv`` holds (``points``) and the runs that have nothing to draw (``missing``)."""

    metrics: list[str] = field(default_factory=list)
    points: list[Row] = field(default_factory=list)
    missing: list[Row] = field(default_factory=list)  # config, seed, run_dir, why


def main_metric(rows: list[Row]) -> str | None:
    """``val/acc`` where the runs have it, else the first validation metric the summary lists."""
    names = [n for n in metric_names(rows, "val") if n != "loss"] or metric_names(rows, "val")
    return f"val/{names[0]}" if names else None


def read_metrics(path: Path, columns: list[str]) -> dict[str, dict[int, float]]:
    """column -> {step: value} from a CSVLogger ``metrics.csv``; a step logged twice keeps its last value."""
    series: dict[str, dict[int, float]] = {c: {} for c in columns}
    with path.open(newline="") as handle:
        for line in csv.DictReader(handle):
            step = line.get("step")
            if not step:
                continue
            for column in columns:
                text = line.get(column)
                if text and math.isfinite(value := float(text)):
                    series[column][int(float(step))] = value
    return series


def collect(groups: list[tuple[str, list[Row]]]) -> Curves:
    """Per-run points and the per-config mean ± std of the loss and the main validation metric."""
    metric = main_metric([run for _, runs in groups for run in runs])
    curves = Curves(metrics=[LOSS] + ([metric] if metric else []))
    for label, runs in groups:
        logged: list[tuple[Row, dict[str, dict[int, float]]]] = []
        for run in runs:
            path = Path(str(run["run_dir"])) / "metrics.csv"
            if not path.is_file():
                why = "no metrics.csv" if path.parent.is_dir() else "run folder not found"
                curves.missing.append(
                    {"config": label, "seed": run.get("seed"), "run_dir": run["run_dir"], "why": why}
                )
                continue
            logged.append((run, read_metrics(path, curves.metrics)))
        for name in curves.metrics:
            curves.points += _points(label, name, logged)
    return curves


def _points(label: str, name: str, logged: list[tuple[Row, dict[str, dict[int, float]]]]) -> list[Row]:
    points: list[Row] = []
    for run, series in logged:
        base = {"config": label, "metric": name, "series": "run", "seed": run.get("seed"), "n": 1}
        base["run_dir"] = run["run_dir"]  # seeds may repeat (a rerun): the folder tells the lines apart
        points += [{**base, "step": s, "value": v} for s, v in sorted(series[name].items())]
    per_run = [series[name] for _, series in logged if series[name]]
    shared = sorted(set.intersection(*(set(s) for s in per_run))) if per_run else []
    for step in shared:
        mean, std = stats([s[step] for s in per_run])
        band = {} if std is None else {"low": mean - std, "high": mean + std}  # type: ignore[operator]
        points.append({"config": label, "metric": name, "series": "mean", "step": step, "value": mean,
                       "std": std, "n": len(per_run), **band})  # fmt: skip
    return points
