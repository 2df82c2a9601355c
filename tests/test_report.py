"""``python -m lit_lora report``: grouping, joining fit and test records, mean ± std, files written."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lit_lora.__main__ import main as lit_lora_main
from lit_lora.report import approach, fmt, stats
from tests.test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]


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


ACCS = {1: 0.81, 2: 0.84, 3: 0.86}
MEMS = {1: 510.0, 2: 530.0, 3: 560.0}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, acc in ACCS.items():
        metrics = {"val/acc": acc, "val/f1": acc - 0.05}
        write_result(root / f"r8_s{seed}", seed=seed, metrics=metrics, peak_memory_mb=MEMS[seed])
    write_result(
        root / "r16_s1", seed=1, r=16, metrics={"val/acc": 0.9, "val/f1": 0.88}, weight_memory_mb=87.25
    )
    write_result(root / "orphan_test", stage="test", metrics={"test/acc": 0.5})
    return root


def test_mean_and_sample_std_over_seeds(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    lit_lora_main(["report", str(runs), "--out", str(out), "--no-plots"])
    summary = {row["config"]: row for row in read_csv(out / "summary.csv")}
    assert set(summary) == {"sst2_lora r=8 alpha=16", "sst2_lora r=16 alpha=32"}
    r8 = summary["sst2_lora r=8 alpha=16"]
    assert r8["n"] == "3"
    assert float(r8["accuracy_mean"]) == pytest.approx(statistics.mean(ACCS.values()))
    assert float(r8["accuracy_std"]) == pytest.approx(statistics.stdev(ACCS.values()))
    assert float(r8["memory_mb_std"]) == pytest.approx(statistics.stdev(MEMS.values()))
    assert summary["sst2_lora r=16 alpha=32"]["accuracy_std"] == ""  # one seed: no std
    table = (out / "summary.md").read_text()
    mean, std = 100 * statistics.mean(ACCS.values()), 100 * statistics.stdev(ACCS.values())
    assert f"| {mean:.2f} ± {std:.2f} |" in table
    assert "| 90.00 |" in table  # the single-seed row has no ±
    assert "| 1.60 | 87.2 | 500 |" in table  # params %, weights, peak memory
    assert "| 0.80 | – | 533 ± 25 |" in table  # runs recorded before weight_memory_mb show a dash
    assert "1 records with no fit record" in table
    assert len(read_csv(out / "results.csv")) == 4


def test_fit_and_test_records_in_one_directory_are_joined(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    test = write_result(run, stage="test", metrics={"test/acc": 0.75, "test/f1": 0.7}, samples_per_s=99.0)
    test.rename(test.with_name("results_test.json"))
    write_result(run)
    out = tmp_path / "report"
    lit_lora_main(["report", str(tmp_path / "runs"), "--out", str(out), "--no-plots"])
    [row] = read_csv(out / "results.csv")
    assert row["stages"] == "fit+test"
    assert float(row["test/acc"]) == 0.75 and float(row["val/acc"]) == 0.8
    assert float(row["samples_per_s"]) == 30.0 and float(row["test_samples_per_s"]) == 99.0
    assert "Accuracy (test, %)" in (out / "summary.md").read_text()  # auto: every run has test metrics


def test_a_separate_test_run_joins_the_fit_whose_adapter_it_loaded(tmp_path: Path) -> None:
    fit_dir = write_result(tmp_path / "runs" / "fit").parent
    config = {"model": {"init_args": {"adapter_path": str(fit_dir / "adapter")}}}
    write_result(tmp_path / "runs" / "test", stage="test", metrics={"test/acc": 0.75}, config=config)
    other = {"model": {"init_args": {"adapter_path": str(tmp_path / "elsewhere" / "adapter")}}}
    write_result(tmp_path / "runs" / "test2", stage="test", metrics={"test/acc": 0.5}, config=other)
    out = tmp_path / "report"
    lit_lora_main(["report", str(tmp_path / "runs"), "--out", str(out), "--no-plots"])
    [row] = read_csv(out / "results.csv")
    assert row["stages"] == "fit+test" and float(row["test/acc"]) == 0.75
    assert row["test_run_dir"] == str(tmp_path / "runs" / "test" / "lightning_logs" / "version_0")
    assert "1 records with no fit record" in (out / "summary.md").read_text()  # test2 tested another fit


def test_an_ensemble_test_run_joins_no_fit_though_its_first_member_is_one(tmp_path: Path) -> None:
    fit_dir = write_result(tmp_path / "runs" / "fit").parent
    init_args = {"adapter_path": str(fit_dir / "adapter"), "ensemble_adapter_paths": ["elsewhere/adapter"]}
    config = {"model": {"init_args": init_args}}
    write_result(tmp_path / "runs" / "ensemble", stage="test", metrics={"test/acc": 0.9}, config=config)
    out = tmp_path / "report"
    lit_lora_main(["report", str(tmp_path / "runs"), "--out", str(out), "--no-plots"])
    [row] = read_csv(out / "results.csv")
    assert row["stages"] == "fit" and "test/acc" not in row  # the fit's adapter alone did not score 0.9
    assert "1 records with no fit record" in (out / "summary.md").read_text()


def test_report_joins_a_real_fit_and_its_test_run(
    tiny_bert: Path, tiny_sst2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(REPO / "configs" / "sst2_lora.yaml")
    common = [
        "--config",
        config,
        "--model.model_name_or_path",
        str(tiny_bert),
        "--data.data_dir",
        str(tiny_sst2),
    ]
    fit = run_cli(
        "fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.default_root_dir", str(tmp_path / "fit"),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    # Tested from another folder with a relative adapter path, as people do.
    test = run_cli(
        "test", *common, "--data.test_split", "test", "--trainer.default_root_dir", "test",
        "--model.adapter_path", "fit/lightning_logs/version_0/adapter", cwd=tmp_path,
    )  # fmt: skip
    assert test.returncode == 0, test.stderr[-3000:]
    fit_record, test_record = (
        json.loads((tmp_path / d / "lightning_logs" / "version_0" / "results.json").read_text())
        for d in ("fit", "test")
    )
    monkeypatch.chdir(REPO)  # the report runs elsewhere than the test did
    out = tmp_path / "report"
    lit_lora_main(["report", str(tmp_path / "fit"), str(tmp_path / "test"), "--out", str(out), "--no-plots"])
    [row] = read_csv(out / "results.csv")
    assert row["run_dir"] == str(tmp_path / "fit" / "lightning_logs" / "version_0")
    assert row["stages"] == "fit+test"
    assert float(row["test/acc"]) == pytest.approx(test_record["metrics"]["test/acc"])
    assert float(row["val/acc"]) == pytest.approx(fit_record["metrics"]["val/acc"])
    assert float(row["test_samples_per_s"]) == pytest.approx(test_record["samples_per_s"])
    table = (out / "summary.md").read_text()
    assert "Accuracy (test, %)" in table and "no fit record" not in table


def test_plots_are_written(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    lit_lora_main(["report", str(runs), "--out", str(out)])
    for name in ("accuracy_vs_params.png", "memory.png", "time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_stats_and_formatting() -> None:
    assert stats([1.0, None, 3.0]) == (2.0, statistics.stdev([1.0, 3.0]))
    assert stats([2.0]) == (2.0, None)
    assert stats([None]) == (None, None)
    assert fmt(0.912, 0.0123, 2, 100) == "91.20 ± 1.23"
    assert fmt(0.912, None, 2, 100) == "91.20"


def test_approach_names() -> None:
    assert approach({"method": "lora", "quantization": "nf4", "ranks": {"r": 8}}) == "QLoRA (nf4), r=8"
    ada = {"method": "adalora", "quantization": "none", "ranks": {"init_r": 12, "target_r": 8}}
    assert approach(ada) == "AdaLoRA, r 12→8"
    manual = {"method": "lora", "quantization": "none", "ranks": {"r": 6, "rank_pattern": {"x": 10}}}
    assert approach(manual) == "LoRA, r=6/10"
    assert approach({"method": "lora", "quantization": "int8", "ranks": {"r": 8}}) == "LoRA + int8 base, r=8"


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_no_results_is_a_one_line_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "lit_lora", "report", str(tmp_path / where), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("lit_lora: error: ") and where in errors[0]


def test_adalora_rows_count_trainable_parameters_at_the_final_budget(tmp_path: Path) -> None:
    parameters = {
        "trainable": 12_000,
        "total": 1_000_000,
        "trainable_pct": 1.2,
        "trainable_at_final_budget": 8_000,
    }
    write_result(tmp_path / "runs" / "ada", method="adalora", parameters=parameters)
    lit_lora_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    (row,) = read_csv(tmp_path / "report" / "results.csv")
    assert (row["trainable"], row["trainable_at_init"], float(row["trainable_pct"])) == ("8000", "12000", 0.8)


def test_the_table_shows_every_metric_the_runs_logged(tmp_path: Path) -> None:
    qa = {"val/exact": 61.5, "val/f1": 64.25, "val/loss": 1.5, "val/start_acc": 0.75}
    write_result(tmp_path / "runs" / "qa", config_name="squad_v2_lora", metrics=qa)
    write_result(
        tmp_path / "runs" / "lm", config_name="wikitext2_lora", metrics={"val/ppl": 12.5, "val/loss": 2.5}
    )
    lit_lora_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--no-plots"])
    table = (tmp_path / "report" / "summary.md").read_text()
    # SQuAD's F1 and exact are percentages already, loss and perplexity no shares: shown as logged.
    head = "| Config | Approach | F1 (val) | exact (val) | loss (val) | ppl (val) | start_acc (val, %) |"
    assert head in table
    assert "| 64.2500 | 61.5000 | 1.5000 | – | 75.00 |" in table
    assert "| – | – | 2.5000 | 12.5000 | – |" in table
    summary = {row["config"]: row for row in read_csv(tmp_path / "report" / "summary.csv")}
    assert float(summary["wikitext2_lora"]["ppl_mean"]) == 12.5


def test_new_methods_are_named_in_the_report() -> None:
    record = {"method": "vera", "method_label": "VeRA", "quantization": "nf4", "ranks": {"r": 256}}
    assert approach(record) == "VeRA + nf4 base, r=256"
    assert approach(
        {**record, "method": "dora", "method_label": "DoRA", "ranks": {"r": 8, "rank_pattern": {}}}
    ) == ("DoRA + nf4 base, r=8")


def test_a_failed_fit_is_no_result(tmp_path: Path) -> None:
    # A sweep point stopped by the NaN guard, then retried to the end in a new version folder.
    point = tmp_path / "runs" / "seed=1"
    failed = write_result(point, metrics={"val/acc": 0.5}, status="failed", failure="training loss is nan")
    failed.parent.rename(failed.parent.with_name("version_1"))
    write_result(point, metrics={"val/acc": 0.9}, status="completed")
    out = tmp_path / "report"
    lit_lora_main(["report", str(tmp_path / "runs"), "--out", str(out), "--no-plots"])
    [row] = read_csv(out / "results.csv")
    assert float(row["val/acc"]) == 0.9
    assert "1 records with no fit record (or a failed one)" in (out / "summary.md").read_text()
