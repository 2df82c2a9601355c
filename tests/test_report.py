"""``python -m lit_lora report``: grouping, joining fit and test records, mean ± std, files written."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_lora.__main__ import main as lit_lora_main
from lit_lora.callbacks import meter
from lit_lora.errors import LitLoraError
from lit_lora.report.checks import load_state
from lit_lora.report.runs import approach, find_runs, fmt, stats
from tests.helpers import REPO
from tests.helpers.cli import run_cli
from tests.helpers.records import read_csv, write_result

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
    assert "| 1.60 | 87.2 | cpu | 500 |" in table  # params %, weights, device, peak memory
    assert "| 0.80 | – | cpu | 533 ± 25 |" in table  # runs recorded before weight_memory_mb show a dash
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
    data = {"init_args": {"seed": 1}}  # the fit's own data
    config = {"model": {"init_args": {"adapter_path": str(fit_dir / "adapter")}}, "data": data}
    write_result(tmp_path / "runs" / "test", stage="test", metrics={"test/acc": 0.75}, config=config)
    other = {"model": {"init_args": {"adapter_path": str(tmp_path / "elsewhere" / "adapter")}}, "data": data}
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


@pytest.mark.slow  # a real fit and test run
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
    for record in (fit_record, test_record):  # how loaded the machine was while it trained / tested
        load = record["load"]
        assert load["load_samples"] >= 2 and load["load_avg_1m_max"] >= load["load_avg_1m_mean"] >= 0
        threads = min(load["torch_threads"], load["usable_cores"])
        busy = load["process_cpu_s"] / (load["wall_s"] * threads)
        # wall_s and process_cpu_s are rounded to 10 ms, cpu_utilisation to 1e-3: the bound of that.
        rounding = 0.005 * (1 + busy * threads) / (load["wall_s"] * threads) + 5e-4
        assert load["cpu_utilisation"] == pytest.approx(busy, abs=rounding)
    assert 0 < fit_record["load"]["wall_s"] < fit_record["wall_time_s"]  # the training span of the run
    monkeypatch.chdir(REPO)  # the report runs elsewhere than the test did
    out = tmp_path / "report"
    lit_lora_main(["report", str(tmp_path / "fit"), str(tmp_path / "test"), "--out", str(out), "--no-plots"])
    [row] = read_csv(out / "results.csv")
    assert row["run_dir"] == str(tmp_path / "fit" / "lightning_logs" / "version_0")
    assert row["stages"] == "fit+test"
    assert float(row["test/acc"]) == pytest.approx(test_record["metrics"]["test/acc"])
    assert float(row["val/acc"]) == pytest.approx(fit_record["metrics"]["val/acc"])
    assert float(row["test_samples_per_s"]) == pytest.approx(test_record["samples_per_s"])
    assert row["load"] in ("clear", "contended")  # measured, whichever it was on this shared machine
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


def report_of(root: Path, out: Path) -> tuple[str, dict[str, dict[str, str]], list[dict[str, str]]]:
    """summary.md, summary.csv by config and results.csv of ``report root --out out``."""
    lit_lora_main(["report", str(root), "--out", str(out), "--no-plots"])
    summary = {row["config"]: row for row in read_csv(out / "summary.csv")}
    return (out / "summary.md").read_text(), summary, read_csv(out / "results.csv")


def test_a_failed_run_is_listed_beside_the_table_not_averaged(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    test = {"val/acc": 0.91, "test/acc": 0.3}
    stopped_test = write_result(
        root / "s1", stage="test", metrics=test, status="failed", failure="KeyboardInterrupt"
    )
    stopped_test.rename(stopped_test.with_name("results_test.json"))
    write_result(root / "s1", seed=1, metrics={"val/acc": 0.91})
    reason = "non-finite training loss (nan) at step 40"
    write_result(root / "s2", seed=2, metrics={"val/acc": 0.52}, status="failed", failure=reason)
    oom = "CUDA out of memory. Tried to allocate 2.00 GiB"
    write_result(root / "s3", seed=3, metrics={}, status="failed", failure=oom, method=None, ranks=None)
    table, summary, rows = report_of(root, tmp_path / "report")
    # Before: n = 2, 71.50 ± 27.58 (the failed run's 0.52 averaged in) and the stopped test's 0.3 joined.
    assert summary["sst2_lora"]["n"] == "1" and float(summary["sst2_lora"]["accuracy_mean"]) == 0.91
    assert [r["seed"] for r in rows] == ["1"] and rows[0]["stages"] == "fit"
    assert "| 91.00 |" in table and "## Not counted" in table
    s1, s2 = (root / d / "lightning_logs" / "version_0" for d in ("s1", "s2"))
    assert f"| sst2_lora (LoRA, r=8, seed 1) | `{s1}` | test | failed | KeyboardInterrupt |" in table
    assert f"| sst2_lora (LoRA, r=8, seed 2) | `{s2}` | fit | failed | {reason} |" in table
    s3 = root / "s3" / "lightning_logs" / "version_0"
    assert f"| sst2_lora (model not built, seed 3) | `{s3}` | fit | failed | {oom} |" in table


def test_an_evaluation_of_another_task_is_kept_out_of_the_fit_row(tmp_path: Path) -> None:
    agnews = {
        "class_path": "lit_lora.data.AGNewsDataModule",
        "init_args": {"data_dir": "../shared/data/ag_news"},
    }
    fit_dir = write_result(
        tmp_path / "runs" / "fit",
        config_name="agnews_smollm2",
        metrics={"val/acc": 0.88},
        config={"data": agnews},
    ).parent

    def test_run(name: str, data: dict[str, Any], metrics: dict[str, float]) -> None:
        model = {"init_args": {"adapter_path": str(fit_dir / "adapter")}}
        config = {"model": model, "data": data}
        write_result(tmp_path / "runs" / name, stage="test", config=config, metrics=metrics)

    gsm8k = {"class_path": "lit_lora.data.GSM8KDataModule", "init_args": {"data_dir": "../shared/data/gsm8k"}}
    test_run("gsm8k", gsm8k, {"test/loss": 2.5, "test/exact_match": 0.0})
    # The fit's own data, named from another folder and read with the evaluation's own choices: joined.
    choices = {"test_split": "test", "max_eval_samples": 500}
    own_args = {"data_dir": "/elsewhere/shared/data/ag_news", **choices}
    own = {"class_path": "lit_lora.data.AGNewsDataModule", "init_args": own_args}
    test_run("agnews", own, {"test/acc": 0.86})
    table, summary, rows = report_of(tmp_path / "runs", tmp_path / "report")
    [row] = rows
    assert float(row["test/acc"]) == 0.86 and "test/loss" not in row and "test/exact_match" not in row
    assert "## Adapters evaluated on other tasks or data" in table
    gsm8k_dir = tmp_path / "runs" / "gsm8k" / "lightning_logs" / "version_0"
    assert (
        "| agnews_smollm2 (LoRA, r=8, seed 1) | GSM8KDataModule ../shared/data/gsm8k (data GSM8KDataModule,"
        f" not the fit's AGNewsDataModule) | test/exact_match=0, test/loss=2.5 | `{gsm8k_dir}` |"
    ) in table
    [other] = read_csv(tmp_path / "report" / "other_evaluations.csv")
    assert (other["fit_run_dir"], float(other["test/loss"])) == (str(fit_dir), 2.5)


def test_runs_on_different_devices_are_never_one_group(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_result(root / "cpu", peak_memory_mb=3000.0, train_time_s=900.0)
    cuda = {
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "num_devices": 1,
        "memory_kind": "cuda_max_allocated",
    }
    write_result(root / "gpu", seed=2, peak_memory_mb=500.0, train_time_s=60.0, **cuda)
    table, summary, _ = report_of(root, tmp_path / "report")
    # Before: one row, n = 2, memory 1750 ± 1768 (RSS and CUDA allocated averaged), time 480.0 ± 593.9.
    assert set(summary) == {"sst2_lora [cpu]", "sst2_lora [NVIDIA H200]"}
    assert "| cpu | 3000 | 900.0 ? |" in table and "| NVIDIA H200 | 500 | 60.0 ? |" in table
    assert [summary[c]["memory_kind"] for c in sorted(summary)] == ["cuda_max_allocated", "cpu_peak_rss"]


def test_runs_on_other_cpus_or_core_counts_are_never_one_group(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, name in ((1, "AMD EPYC, 2 cores"), (2, "AMD EPYC, 16 cores"), (3, "AMD EPYC, 2 cores")):
        write_result(root / f"s{seed}", seed=seed, device_name=name, train_time_s=100.0 * seed)
    _, summary, _ = report_of(root, tmp_path / "report")
    assert set(summary) == {"sst2_lora [AMD EPYC, 2 cores]", "sst2_lora [AMD EPYC, 16 cores]"}
    assert summary["sst2_lora [AMD EPYC, 2 cores]"]["n"] == "2"


def test_a_cpu_is_named_by_its_model_and_the_cores_the_process_may_use() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cores = len(os.sched_getaffinity(0))
    assert meter.device_name(torch.device("cpu")) == f"{models[0]}, {cores} cores"
    assert meter.device_name(torch.device("mps")) == "mps"


def measured_load(mean: float | None, cpu_s: float, wall_s: float = 100.0, cores: int = 2) -> dict[str, Any]:
    return {"cpu_count": cores, "load_avg_1m_mean": mean, "process_cpu_s": cpu_s, "wall_s": wall_s}


def test_a_contended_time_is_left_out_of_the_mean_and_marked(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, time_s, load in (
        (1, 60.0, measured_load(1.1, 95.0)),
        (2, 62.0, measured_load(1.9, 90.0)),
        (3, 2461.0, measured_load(5.0, 20.0)),  # another training took the cores
    ):
        write_result(
            root / f"s{seed}", seed=seed, train_time_s=time_s, samples_per_s=2000 / time_s, load=load
        )
    table, summary, rows = report_of(root, tmp_path / "report")
    row = summary["sst2_lora"]
    assert (row["n"], row["time_runs"], row["time_contended"]) == ("3", "2", "1")
    assert float(row["time_s_mean"]) == 61.0 and float(row["time_s_std"]) == pytest.approx(2**0.5)
    assert "| 61.0 ± 1.4 (2 of 3) * | 32.8 ± 0.8 | 3 |" in table  # before: 861.0 ± 1385.6
    assert "\\* Time and samples/s leave out the runs measured under contention" in table
    assert [(r["load"], r["load_note"]) for r in rows] == [
        ("clear", ""),
        ("clear", ""),
        ("contended", "load 2.50 per core; process on a core 20% of the wall time"),
    ]


def test_times_of_unknown_load_are_marked_and_a_wide_spread_is_called_out(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, time_s in ((1, 2460.9), (2, 505.02), (3, 457.69)):  # Joint-2's three CPU seeds
        write_result(root / f"s{seed}", seed=seed, train_time_s=time_s)
    table, summary, _ = report_of(root, tmp_path / "report")
    assert "| 1141.2 ± 1143.1 ?! |" in table
    assert float(summary["sst2_lora"]["time_spread"]) == 5.38
    assert "? Load not recorded" in table and "! The slowest run averaged took more than 1.5x" in table


@pytest.mark.parametrize(
    ("device", "load", "expected"),
    [
        ("cpu", None, ("unknown", "load not recorded")),
        ("cpu", measured_load(3.0, 90.0), ("clear", "")),  # 1.5 per core: at the limit, not above
        ("cpu", measured_load(3.02, 90.0), ("contended", "load 1.51 per core")),
        ("cpu", measured_load(0.5, 49.0), ("contended", "process on a core 49% of the wall time")),  # paused
        ("cpu", measured_load(1.0, 60.0, cores=16), ("clear", "")),  # 16 threads mostly idle: no contention
        ("cuda", measured_load(0.5, 5.0), ("clear", "")),  # a GPU run's CPU mostly waits
        ("cuda", measured_load(40.0, 90.0, cores=16), ("contended", "load 2.50 per core")),
        ("cuda", measured_load(None, 10.0), ("unknown", "no load average on this platform")),
        ("cpu", measured_load(None, 90.0), ("clear", "")),  # no load average, but the CPU share says
    ],
)
def test_the_contention_rule(device: str, load: dict[str, Any] | None, expected: tuple[str, str]) -> None:
    record = {"device": device, **({"load": load} if load else {})}
    assert load_state(record) == expected


def test_machine_load_samples_the_load_average_and_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"wall": 100.0, "cpu": 10.0}
    loads = iter([1.0, 2.0, 4.0])

    class FakeTime:
        perf_counter = staticmethod(lambda: clock["wall"])
        process_time = staticmethod(lambda: clock["cpu"])

    monkeypatch.setattr(meter, "time", FakeTime)
    monkeypatch.setattr(meter.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr(meter.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(meter, "_usable_cores", lambda: 2)
    monkeypatch.setattr(meter.torch, "get_num_threads", lambda: 8)
    machine = meter.MachineLoad(every_s=10.0)
    assert machine.record() == {}  # never started: nothing to say
    machine.start()
    clock["wall"] += 5.0
    machine.sample()  # under every_s since the start: not sampled
    clock["wall"] += 5.0
    machine.sample()
    clock["wall"], clock["cpu"] = 140.0, 40.0
    assert machine.record() == {
        "load": {
            "cpu_count": 4,
            "usable_cores": 2,
            "torch_threads": 8,
            "load_avg_1m_mean": 2.33,
            "load_avg_1m_max": 4.0,
            "load_samples": 3,
            "wall_s": 40.0,
            "process_cpu_s": 30.0,
            "cpu_utilisation": 0.375,  # 30 s of CPU over 40 s on min(8 threads, 2 cores)
        }
    }


def test_an_earlier_results_csv_is_read_back_when_its_runs_are_gone(runs: Path, tmp_path: Path) -> None:
    _, first, _ = report_of(runs, tmp_path / "first")
    # The same rows as a report before status and load were recorded wrote them.
    old = [{k: v for k, v in r.items() if not k.startswith(("status", "load", "device_label", "cpu_util"))}
           for r in read_csv(tmp_path / "first" / "results.csv")]  # fmt: skip
    old_csv = tmp_path / "old" / "results.csv"
    old_csv.parent.mkdir()
    with old_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(old[0]))
        writer.writeheader()
        writer.writerows(old)
    table, again, rows = report_of(old_csv, tmp_path / "again")
    columns = ("n", "seeds", "accuracy_mean", "accuracy_std", "memory_mb_mean", "time_s_mean", "device")
    assert {c: {k: s[k] for k in columns} for c, s in again.items()} == {
        c: {k: s[k] for k in columns} for c, s in first.items()
    }
    assert [r["load"] for r in rows] == ["unknown"] * 4 and "| 10.0 ± 0.0 ? |" in table
    assert "4 runs come from an earlier results.csv that recorded no status" in table
    table, _, rows = report_of(tmp_path / "first" / "results.csv", tmp_path / "round_trip")
    assert "recorded no status" not in table and {r["status"] for r in rows} == {"completed"}
    with pytest.raises(LitLoraError, match=r"summary.csv: not a report's results.csv \(no column run_dir"):
        find_runs([tmp_path / "first" / "summary.csv"])


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
    summary = (out / "summary.md").read_text()
    assert "## Not counted" in summary and "training loss is nan" in summary


def test_report_colours_stay_distinct_past_ten_configs() -> None:
    from lit_lora.report.plots import palette

    for n in (3, 10, 11, 20):
        colours = [palette(n)(i) for i in range(n)]
        assert len(set(colours)) == n, n  # tab10 alone gave the 11th config the 1st one's colour
