"""``report``'s training curves: the per-config mean line and band over seeds, from each run's metrics.csv."""

from __future__ import annotations

import math
from pathlib import Path

from lit_lora.__main__ import main as lit_lora_main
from tests.helpers.records import read_csv, write_result

# Lightning's CSVLogger layout: the step column counts optimizer steps; validation rows at epoch end.
HEADER = "epoch,step,train/loss,val/acc,val/loss\n"
METRICS = {
    1: "0,9,0.7,,\n0,19,0.5,,\n0,19,,0.6,0.65\n",
    2: "0,9,0.9,,\n0,19,0.3,,\n0,19,,0.8,0.45\n0,29,0.2,,\n",  # one step more than seed 1
}


def test_curves_pin_the_mean_and_band_over_seeds_and_list_runs_without_metrics(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, rows in METRICS.items():
        record = write_result(root / f"s{seed}", seed=seed, metrics={"val/acc": 0.7})
        (record.parent / "metrics.csv").write_text(HEADER + rows)
    write_result(root / "s3", seed=3, metrics={"val/acc": 0.7})  # same config, no metrics.csv
    out = tmp_path / "report"
    lit_lora_main(["report", str(root), "--out", str(out)])
    points = read_csv(out / "curves.csv")
    mean = {(p["metric"], int(p["step"])): p for p in points if p["series"] == "mean"}
    # Only the steps both seeds logged; seed 2's step 29 stays on its own line.
    assert sorted(mean) == [("train/loss", 9), ("train/loss", 19), ("val/acc", 19)]
    std = math.sqrt(0.02)  # sample std (ddof=1) of 0.7 and 0.9, of 0.5 and 0.3, of 0.6 and 0.8
    for key, value in {("train/loss", 9): 0.8, ("train/loss", 19): 0.4, ("val/acc", 19): 0.7}.items():
        row = mean[key]
        assert row["n"] == "2"
        assert math.isclose(float(row["value"]), value) and math.isclose(float(row["std"]), std)
        assert math.isclose(float(row["low"]), value - std) and math.isclose(float(row["high"]), value + std)
    seed2 = [(int(p["step"]), float(p["value"])) for p in points if p["seed"] == "2" and p["series"] == "run"]
    assert seed2 == [(9, 0.9), (19, 0.3), (29, 0.2), (19, 0.8)]  # loss, then val/acc
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "summary.md").read_text()
    s3 = root / "s3" / "lightning_logs" / "version_0"
    assert f"| sst2_lora | 3 | `{s3}` | no metrics.csv |" in table
    assert "1 counted runs have no curve" in table


def test_a_report_whose_runs_have_no_metrics_writes_no_curves(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_result(root / "s1", seed=1)
    out = tmp_path / "report"
    lit_lora_main(["report", str(root), "--out", str(out)])
    assert not (out / "curves.csv").exists() and not (out / "curves.png").exists()
    assert (
        "No counted run has a metrics.csv in its run folder: no curves." in (out / "summary.md").read_text()
    )
