"""The runs of a report: finding records, joining evaluations to fits, grouping and summarising.

The rules are in the docstring of :mod:`lit_lora.report.command`, the command that uses them.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_lora.errors import LitLoraError
from lit_lora.report import checks
from lit_lora.report.reread import reread_results_csv

IGNORED_SUFFIXES = ("seed", "seed_everything", "default_root_dir", "ckpt_path", "config")
IGNORED_PREFIXES = ("trainer.logger",)
MEMORY_KINDS = {
    "cuda_max_allocated": "peak CUDA memory allocated by tensors",
    "mps_driver_allocated": "MPS driver memory at the end of the run",
    "cpu_peak_rss": "peak resident memory of the whole process",
}
Row = dict[str, Any]


@dataclass
class Found:
    """What ``find_runs`` read: the runs that count and, beside them, every record that does not."""

    rows: list[Row] = field(default_factory=list)  # completed fits, evaluations of their own data joined
    skipped: int = 0  # records with no fit (or an ensemble's)
    not_counted: list[Row] = field(default_factory=list)  # stopped or failed: config, folder, status, reason
    other_data: list[Row] = field(default_factory=list)  # a fit's adapter scored on another task or data
    status_unrecorded: int = 0  # rows of an earlier results.csv that had no status column


def find_runs(dirs: Sequence[Path]) -> Found:
    """One row per completed run directory below ``dirs``; the records that do not count, listed apart."""
    by_dir: dict[Path, list[dict[str, Any]]] = {}
    found = Found()
    for root in dirs:
        if not root.exists():
            raise LitLoraError(f"run directory {root}: no such directory")
        if root.suffix == ".csv":  # an earlier report's results.csv: its run folders may be gone
            rows = reread_results_csv(root)
            found.rows += rows
            found.status_unrecorded += sum(r["status"] is None for r in rows)
            continue
        for path in sorted([root] if root.is_file() else root.rglob("results*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and "stage" in record:
                by_dir.setdefault(path.parent, []).append(record)
    if not by_dir and not found.rows:
        raise LitLoraError(f"no results.json below {', '.join(map(str, dirs))}: give run directories")
    _join_to_fits(by_dir)
    for directory, records in sorted(by_dir.items()):
        fits = [r for r in records if r["stage"] == "fit"]
        if not fits:
            found.skipped += len(records)
            continue
        fit, evaluations = fits[-1], [r for r in records if r["stage"] != "fit"]
        if checks.status(fit) != "completed":  # its metrics are wherever it stopped: in no mean
            found.not_counted += [_unfinished(r, directory, fit) for r in (fit, *evaluations)]
            continue
        joined = []
        for evaluation in evaluations:
            difference = checks.data_difference(fit, evaluation)
            if checks.status(evaluation) != "completed":
                found.not_counted.append(_unfinished(evaluation, directory, fit))
            elif difference is not None:  # another task's scores are not this fit's
                found.other_data.append(_other_data(evaluation, directory, fit, difference))
            else:
                joined.append(evaluation)
        found.rows.append(_row(directory, fit, joined))
    return found


def _unfinished(record: dict[str, Any], directory: Path, fit: dict[str, Any]) -> Row:
    own = checks.status(record) != "completed"
    built = approach(fit) if fit.get("method") else "model not built"  # it failed before describing one
    return {
        "config": f"{fit.get('config_name')} ({built}, seed {fit.get('seed')})",
        "run_dir": checks.run_folder(record, directory),
        "stage": record["stage"],
        "status": checks.status(record if own else fit) + ("" if own else " fit"),
        "reason": checks.reason(record) if own else f"its fit did not complete: {checks.reason(fit)}",
    }


def _other_data(record: dict[str, Any], directory: Path, fit: dict[str, Any], difference: str) -> Row:
    return {
        "adapter_of": f"{fit.get('config_name')} ({approach(fit)}, seed {fit.get('seed')})",
        "fit_run_dir": str(directory),
        "stage": record["stage"],
        "evaluated": checks.data_label(record),
        "difference": difference,
        "run_dir": checks.run_folder(record, directory),
        **dict(sorted((record.get("metrics") or {}).items())),
    }


def _join_to_fits(by_dir: dict[Path, list[dict[str, Any]]]) -> None:
    """Move the records of evaluation-only run directories to the fit whose adapter they loaded."""
    fits = {d.resolve(): d for d, records in by_dir.items() if any(r["stage"] == "fit" for r in records)}
    for directory in [d for d in by_dir if d.resolve() not in fits]:
        kept = []
        for record in by_dir[directory]:
            fit = _fit_of(record, fits)
            if fit is None:
                kept.append(record)
            else:
                by_dir[fit].append({**record, "_run_dir": str(directory)})
        by_dir[directory] = kept


def _fit_of(record: dict[str, Any], fits: dict[Path, Path]) -> Path | None:
    model = (record.get("config") or {}).get("model")
    init_args = model.get("init_args") if isinstance(model, dict) else None
    adapter = init_args.get("adapter_path") if isinstance(init_args, dict) else None
    if not adapter or init_args.get("ensemble_adapter_paths"):
        return None  # an ensemble's scores are not its first member's: no single fit owns them
    run = Path(str(adapter)).parent  # AdapterExport writes <fit run dir>/adapter
    if run.resolve() in fits:
        return fits[run.resolve()]
    if run.is_absolute():
        return None
    # Relative to wherever the evaluation ran, which need not be where the report runs.
    matches = [fit for resolved, fit in fits.items() if resolved.parts[-len(run.parts) :] == run.parts]
    return matches[0] if len(matches) == 1 else None


def _share(count: int | None, params: dict[str, Any]) -> float | None:
    total = params.get("total")
    return 100.0 * count / total if count and total else None


def _row(directory: Path, fit: dict[str, Any], others: list[dict[str, Any]]) -> Row:
    params = fit.get("parameters") or {}
    load = fit.get("load") or {}
    state, why = checks.load_state(fit)
    cores = load.get("cpu_count")
    row: Row = {
        "run_dir": str(directory),
        "config_name": fit.get("config_name"),
        "approach": approach(fit),
        "method": fit.get("method"),
        "quantization": fit.get("quantization"),
        "seed": fit.get("seed"),
        "status": checks.status(fit),
        "stages": "+".join(["fit", *sorted({r["stage"] for r in others})]),
        "device": fit.get("device"),
        "device_label": checks.device_label(fit),
        "precision": fit.get("precision"),
        # AdaLoRA: what the final rank budget keeps (its count at init_r stays beside it).
        "trainable": params.get("trainable_at_final_budget") or params.get("trainable"),
        "trainable_at_init": params.get("trainable"),
        "total": params.get("total"),
        "trainable_pct": _share(params.get("trainable_at_final_budget"), params)
        or params.get("trainable_pct"),
        "weight_memory_mb": fit.get("weight_memory_mb"),
        **{k: fit.get(k) for k in ("peak_memory_mb", "memory_kind", "train_time_s", "wall_time_s")},
        **{k: fit.get(k) for k in ("samples_per_s", "train_samples", "global_steps", "epochs")},
        "load": state,  # clear, contended or unknown: see lit_lora/report/checks.py
        "load_note": why,
        "load_avg_per_core": round(load["load_avg_1m_mean"] / cores, 2)
        if load.get("load_avg_1m_mean") is not None and cores
        else None,
        "cpu_utilisation": load.get("cpu_utilisation"),
    }
    metrics = dict(fit.get("metrics") or {})
    for other in others:
        metrics.update({k: v for k, v in (other.get("metrics") or {}).items() if k not in metrics})
        if other["stage"] == "test":
            row["test_samples_per_s"] = other.get("samples_per_s")
        if "_run_dir" in other:  # a separate evaluation run: where its own files are
            row[f"{other['stage']}_run_dir"] = other["_run_dir"]
    row.update(sorted(metrics.items()))
    row["_config"] = {k: v for k, v in _flatten(fit.get("config") or {}).items() if not _ignored(k)}
    ranks = json.dumps(fit.get("ranks"), sort_keys=True)
    base = (fit.get("config_name"), fit.get("method"), fit.get("quantization"), ranks)
    # Times and memory of different devices (and memory kinds) are never one statistic.
    where = (row["device_label"], fit.get("memory_kind"))
    row["_key"] = (*base, *where, tuple(sorted(row["_config"].items())))
    return row


def approach(record: dict[str, Any]) -> str:
    """``LoRA, r=8``, ``QLoRA (nf4), r=8``, ``AdaLoRA, r 12→8, bf16-mixed``, ``LoRA, r=6/10`` (pattern)."""
    method, quant = record.get("method"), record.get("quantization") or "none"
    # Records before method labels were written name LoRA and AdaLoRA only.
    name = record.get("method_label") or {"lora": "LoRA", "adalora": "AdaLoRA"}.get(str(method), str(method))
    if quant in ("nf4", "fp4") and name == "LoRA":
        name = f"QLoRA ({quant})"
    elif quant != "none":
        name = f"{name} + {quant} base"
    ranks = record.get("ranks") or {}
    if "init_r" in ranks:
        name += f", r {ranks['init_r']}→{ranks['target_r']}"
    elif "r" in ranks:
        values = sorted({int(ranks["r"]), *map(int, (ranks.get("rank_pattern") or {}).values())})
        name += f", r={'/'.join(map(str, values))}"
    precision = str(record.get("precision") or "")
    return f"{name}, {precision}" if precision and not precision.startswith("32") else name


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(value, sort_keys=True)}


def _ignored(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in IGNORED_SUFFIXES or key.startswith(IGNORED_PREFIXES)


def _short(key: str) -> str:
    parts = [p for p in key.split(".") if p != "init_args"]
    return parts[-1] if parts else key


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def group_runs(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """(label, runs) per configuration; the label adds what tells same-named configs apart."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(row["_key"], []).append(row)
    labelled = []
    for key, runs in groups.items():
        name = key[0] or "(no config name)"
        siblings = [other[0] for k, other in groups.items() if k[0] == key[0]]
        mine = runs[0]["_config"]
        differing = [k for k in mine if any(s["_config"].get(k) != mine[k] for s in siblings)]
        extra = " ".join(f"{_short(k)}={_show(json.loads(mine[k]))}" for k in differing[:4])
        if any(s["device_label"] != runs[0]["device_label"] for s in siblings):
            extra = f"{extra} [{runs[0]['device_label']}]".strip()
        if not extra and len(siblings) > 1:
            extra = runs[0]["approach"]
        labelled.append((f"{name} {extra}".strip(), runs))
    labelled.sort(key=lambda g: (str(g[1][0]["config_name"]), g[1][0]["trainable"] or 0, g[0]))
    return labelled


def stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the values present; std is None for one value."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None


def fmt(mean: float | None, std: float | None, digits: int, scale: float = 1.0) -> str:
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


# Summary names of the classification pair, which the plots and earlier summaries use.
SUMMARY_NAMES = {"acc": "accuracy", "f1": "f1"}
TITLES = {"acc": "Accuracy", "f1": "F1"}


def metric_names(rows: list[Row], split: str) -> list[str]:
    """Every metric any run logged for ``split`` (``val/acc`` -> ``acc``): acc and f1 first, then by name."""
    names = {k.split("/", 1)[1] for r in rows for k in r if k.startswith(f"{split}/")}
    return [n for n in SUMMARY_NAMES if n in names] + sorted(names - set(SUMMARY_NAMES))


def summarize(groups: list[tuple[str, list[Row]]], split: str) -> list[Row]:
    """One summary row per group with the numbers behind the table."""
    out = []
    names = metric_names([r for _, runs in groups for r in runs], split)
    for label, runs in groups:
        row: Row = {"config": label, "config_name": runs[0]["config_name"], "approach": runs[0]["approach"]}
        row["n"] = len(runs)
        row["seeds"] = " ".join(str(r["seed"]) for r in runs)
        row["split"] = split
        for name in ["acc", "f1", *names]:
            summary_name = SUMMARY_NAMES.get(name, name)
            row[f"{summary_name}_mean"], row[f"{summary_name}_std"] = stats(
                [r.get(f"{split}/{name}") for r in runs]
            )
        row["trainable"], row["trainable_pct"] = runs[0]["trainable"], runs[0]["trainable_pct"]
        row["weight_memory_mb"] = runs[0].get("weight_memory_mb")  # one configuration: the same weights
        row["memory_mb_mean"], row["memory_mb_std"] = stats([r.get("peak_memory_mb") for r in runs])
        row["memory_kind"] = str(runs[0]["memory_kind"])  # one per group: it is part of the key
        row["device"] = runs[0]["device_label"]
        row.update(time_summary(runs))
        out.append(row)
    return out


def time_summary(runs: list[Row]) -> Row:
    """Time and samples/s over the runs not measured under contention, and what the cell must say."""
    timed = [r for r in runs if r["load"] != "contended"]
    row: Row = {"time_runs": len(timed), "time_contended": len(runs) - len(timed)}
    unknown = [r for r in timed if r["load"] == "unknown" and r.get("train_time_s") is not None]
    row["time_load_unknown"] = len(unknown)
    row["time_s_mean"], row["time_s_std"] = stats([r.get("train_time_s") for r in timed])
    row["samples_per_s_mean"], row["samples_per_s_std"] = stats([r.get("samples_per_s") for r in timed])
    times = [float(r["train_time_s"]) for r in timed if r.get("train_time_s")]
    row["time_spread"] = round(max(times) / min(times), 2) if len(times) > 1 else None
    marks = "*" if row["time_contended"] else ""
    marks += "?" if row["time_load_unknown"] else ""
    marks += "!" if row["time_spread"] is not None and row["time_spread"] > checks.SPREAD_LIMIT else ""
    row["time_marks"] = marks
    return row


def to_csv(rows: list[Row]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
