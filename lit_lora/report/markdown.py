"""``summary.md``: the table of completed runs, its footnotes, and the records kept out of it."""

from __future__ import annotations

from lit_lora.report import checks
from lit_lora.report.curves import Curves
from lit_lora.report.runs import MEMORY_KINDS, SUMMARY_NAMES, TITLES, Found, Row, fmt


def markdown(
    summary: list[Row], split: str, found: Found, names: list[str] | None = None, curves: Curves | None = None
) -> str:
    names = ["acc", "f1"] if names is None else names
    # Fractions (accuracy, classification F1) show as percentages; SQuAD's exact and F1 are percentages
    # already, and loss or perplexity are not shares at all: those show as logged.
    percent = {
        n: _all_fractions(summary, SUMMARY_NAMES.get(n, n)) and n not in ("loss", "ppl") for n in names
    }
    head = ["Config", "Approach"]
    head += [f"{TITLES.get(n, n)} ({split}{', %' if percent[n] else ''})" for n in names]
    head += ["Params (%)", "Weights (MB)", "Device", "Memory (MB)", "Time (s)", "samples/s", "n"]
    lines = ["# lit_lora report", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        pct = s["trainable_pct"]
        pct = "–" if pct is None else f"{pct:.2f}" if pct >= 0.1 else f"{pct:.3f}"
        cells = [s["config"], s["approach"]]
        for name in names:
            key = SUMMARY_NAMES.get(name, name)
            scale, digits = (100, 2) if percent[name] else (1, 4)
            cells.append(fmt(s.get(f"{key}_mean"), s.get(f"{key}_std"), digits, scale))
        weights = s.get("weight_memory_mb")
        cells += [pct, "–" if weights is None else f"{weights:.1f}", s["device"]]
        cells += [fmt(s["memory_mb_mean"], s["memory_mb_std"], 0), _time_cell(s)]
        cells += [fmt(s["samples_per_s_mean"], s["samples_per_s_std"], 1), str(s["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    kinds = sorted({s["memory_kind"] for s in summary})
    lines += [
        "",
        f"{len(found.rows)} runs{'' if found.status_unrecorded else ', all completed'}."
        " Mean ± sample standard deviation (ddof=1) over the n runs",
        "(seeds) of each config and device; a single run shows no ±. Metrics are every final "
        + ("test" if split == "test" else "validation")
        + " metric the runs logged. Params: trainable share of all parameters.",
        "Weights: the model's weights as stored (quantised ones packed, their constants included);",
        "Memory: the peak of the whole run beside them, measured as its device allows.",
        "Time: training only (validation excluded); samples/s: training samples per second of it.",
        "Memory kinds: " + "; ".join(f"{k} = {MEMORY_KINDS.get(k, k)}" for k in kinds) + ".",
        *_time_notes(summary),
    ]
    if found.status_unrecorded:
        count = found.status_unrecorded
        lines += ["", f"{count} runs come from an earlier results.csv that recorded no status: they are"
                  " counted, though that report kept failed runs too."]  # fmt: skip
    if found.skipped:
        lines.append(f"{found.skipped} records with no fit record in their directory were skipped.")
    lines += _not_counted(found.not_counted) + _other_data(found.other_data)
    lines += _curves(curves) if curves is not None else []
    return "\n".join(lines) + "\n"


def _time_cell(s: Row) -> str:
    text = fmt(s["time_s_mean"], s["time_s_std"], 1)
    if s["time_contended"]:
        text += f" ({s['time_runs']} of {s['n']})"
    return f"{text} {s['time_marks']}" if s["time_marks"] else text


def _time_notes(summary: list[Row]) -> list[str]:
    marks = "".join(s["time_marks"] for s in summary)
    notes = []
    if "*" in marks:
        notes.append(
            "\\* Time and samples/s leave out the runs measured under contention (k of n kept): the"
            f" machine's mean 1-minute load average above {checks.LOAD_PER_CORE_LIMIT:g} per core, or on"
            f" a CPU the process's CPU time under {100 * checks.CPU_SHARE_FLOOR:.0f}% of its wall time"
            " (each run's figures and reason: results.csv, columns load and load_note)."
        )
    if "?" in marks:
        notes.append(
            "? Load not recorded (records from before lit_lora measured it): these times may include"
            " contention; nothing says they do not."
        )
    if "!" in marks:
        notes.append(
            f"! The slowest run averaged took more than {checks.SPREAD_LIMIT:g}x as long as the fastest for"
            " the same work: they were not measured alike, and their mean compares nothing."
        )
    return [line for note in notes for line in ("", note)]  # one paragraph each


def _not_counted(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Not counted", "", f"{len(rows)} records did not complete; they are in no number above."]
    lines += ["", "| Config | Run folder | Stage | Status | Reason |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r["config"], f"`{r['run_dir']}`", r["stage"], r["status"], r["reason"].replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _other_data(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Adapters evaluated on other tasks or data", ""]
    lines.append(f"{len(rows)} records scored a fit's adapter on data not its own; kept out of its row.")
    lines += ["", "| Adapter of | Evaluated | Metrics | Run folder |", "|---|---|---|---|"]
    for r in rows:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in r.items() if "/" in k and isinstance(v, int | float))
        evaluated = f"{r['evaluated']} ({r['difference']})"
        cells = [r["adapter_of"], evaluated, metrics or "–", f"`{r['run_dir']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _curves(curves: Curves) -> list[str]:
    lines = ["", "## Training curves", ""]
    if curves.points:
        lines += [
            f"`curves.png` / `curves.csv`: {' and '.join(curves.metrics)} against optimizer steps (the `step`"
            " column of each run's metrics.csv), one faint line per run; per config a mean line and a band of"
            " ± one sample standard deviation over its seeds, at the steps all of its runs logged."
        ]
    else:
        lines.append("No counted run has a metrics.csv in its run folder: no curves.")
    if curves.missing:
        lines += [
            "",
            f"{len(curves.missing)} counted runs have no curve:",
            "",
            "| Config | Seed | Run folder | Why |",
        ]
        lines.append("|---|---|---|---|")
        lines += [f"| {m['config']} | {m['seed']} | `{m['run_dir']}` | {m['why']} |" for m in curves.missing]
    return lines


def _all_fractions(summary: list[Row], key: str) -> bool:
    values = [s.get(f"{key}_mean") for s in summary]
    return all(v is None or 0.0 <= v <= 1.0 for v in values)
