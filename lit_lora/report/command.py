"""``python -m lit_lora report RUN_DIRS... --out DIR``: ``results.json`` files to CSV, Markdown and plots.

Rules. A *run* is one directory holding a ``results.json`` with ``stage: fit`` (``trainer.log_dir``);
``test`` or ``validate`` records in the same directory add their metrics to it, and so do those of a
separate ``test``/``validate`` run that loaded the fit's adapter (``model.adapter_path`` names
``<fit run>/adapter``; a relative path is matched by its trailing folders), but only when they scored
the fit's own task and data (same data class and settings, the evaluation's own choices such as
``test_split`` or ``max_eval_samples`` aside): an adapter scored on another task is listed in a table
of its own (and ``other_evaluations.csv``), never in the fit's row. Only *completed* records count: a
fit or evaluation that failed or was stopped (``status`` other than ``completed``) is listed beside the
table with its run folder, status and reason. Records with no fit are skipped (and counted), and so
are those of an adapter ensemble (``model.ensemble_adapter_paths``).
Runs are grouped by ``config_name``, method, quantisation, device (name and count), memory kind and
the rest of their recorded config, ignoring seeds and output paths: a group is one configuration on one
kind of device over seeds. Each group shows mean ± sample standard deviation (ddof=1) and n; n=1 shows
no ±. Time and samples/s leave out the runs measured under contention and mark the times whose load
is unknown or that spread widely (the rule: ``lit_lora/report/checks.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lit_lora.core.io import atomic_write_text, check_output_folder
from lit_lora.report.curves import collect
from lit_lora.report.markdown import markdown
from lit_lora.report.runs import find_runs, group_runs, metric_names, summarize, to_csv

OUTPUT_FILES = (
    "results.csv", "summary.csv", "summary.md", "other_evaluations.csv", "accuracy_vs_params.png",
    "memory.png", "time.png", "curves.csv", "curves.png",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lit_lora report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="directories searched for results.json")
    parser.add_argument("--out", type=Path, required=True, help="where the CSVs, table and plots go")
    parser.add_argument(
        "--split",
        choices=("auto", "val", "test"),
        default="auto",
        help="metrics in the table: auto = test if every run has them, else val",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    check_output_folder(args.out, "--out", OUTPUT_FILES)

    found = find_runs(args.run_dirs)
    rows = found.rows
    split = args.split
    if split == "auto":
        split = "test" if all(any(k.startswith("test/") for k in r) for r in rows) else "val"
    groups = group_runs(rows)
    summary = summarize(groups, split)
    run_rows = [{"config": label, **run} for label, runs in groups for run in runs]
    atomic_write_text(args.out / "results.csv", to_csv(run_rows))
    atomic_write_text(args.out / "summary.csv", to_csv(summary))
    names = metric_names(rows, split)
    curves = collect(groups)
    atomic_write_text(args.out / "summary.md", markdown(summary, split, found, names, curves))
    written = ["results.csv", "summary.csv", "summary.md"]
    if curves.points:
        atomic_write_text(args.out / "curves.csv", to_csv(curves.points))
        written.append("curves.csv")
    if found.other_data:
        atomic_write_text(args.out / "other_evaluations.csv", to_csv(found.other_data))
        written.append("other_evaluations.csv")
    if not args.no_plots:
        from lit_lora.report.plots import plot_all

        written += plot_all(summary, run_rows, split, args.out)
        if curves.points:
            from lit_lora.report.plots import curves as plot_curves

            plot_curves(curves.points, curves.metrics, args.out / "curves.png")
            written.append("curves.png")
    left_out = f" ({len(found.not_counted)} records did not complete)" if found.not_counted else ""
    print(
        f"lit_lora report: {len(rows)} runs in {len(groups)} configs{left_out}"
        f" -> {args.out}/{{{','.join(written)}}}"
    )
