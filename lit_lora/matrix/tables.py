"""The matrix's outputs: ``matrix.csv``, ``matrix.md`` and ``matrix.png`` (rows: models, columns: tasks).

A task with several metrics has a column per metric: its first under the task's name, the others as
``<task>:<metric>`` (``gsm8k:test/exact_match_flexible``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from lit_lora.core.io import atomic_write_text
from lit_lora.matrix.spec import Column, Spec

FAILED = "failed"
NOT_RUN = "not run"  # left out by --tasks / --models and not finished earlier


@dataclass(frozen=True)
class Cell:
    status: str  # "completed", FAILED or NOT_RUN
    value: float | None = None
    reason: str = ""


Cells = dict[tuple[str, str], Cell]  # (model, column name) -> cell


def share(spec: Spec, cells: Cells, model: str, column: Column) -> float | None:
    """A merge's score over the score of the adapter trained on the column's task; None where either is
    missing."""
    own = spec.own_adapter(column.task.name)
    merged = cells.get((model, column.name))
    mine = cells.get((own.name, column.name)) if own else None
    if merged is None or mine is None or merged.value is None or mine.value in (None, 0):
        return None
    return merged.value / mine.value


def _score(cell: Cell | None) -> str:
    if cell is None:
        return NOT_RUN
    if cell.status != "completed" or cell.value is None:
        return cell.status if cell.status == NOT_RUN else FAILED
    return f"{cell.value:.4f}"


def _share_text(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def to_csv(spec: Spec, cells: Cells) -> str:
    """One row per model: kind, own task, a score per column, then ``share:<column>`` for merges."""
    columns = spec.columns
    names = [c.name for c in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "kind", "own_task", *names, *(f"share:{n}" for n in names)])
    for m in spec.models:
        scores = [_score(cells.get((m.name, n))) for n in names]
        shares = [_share_text(share(spec, cells, m.name, c)) if m.merge else "" for c in columns]
        writer.writerow([m.name, m.kind, m.own_task or "", *scores, *shares])
    return buffer.getvalue()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def to_markdown(spec: Spec, cells: Cells) -> str:
    columns = spec.columns
    header = ["model", "kind", *(f"{c.task.name} ({c.metric})" for c in columns)]
    rows = [[m.name, m.kind, *(_score(cells.get((m.name, c.name))) for c in columns)] for m in spec.models]
    lines = [f"# Model x task matrix (base: `{spec.base}`)", "", *_table(header, rows)]
    failed = [(k, c) for k, c in cells.items() if c.status == FAILED]
    if failed:
        lines += ["", "Failed cells:", ""]
        lines += [f"- {model} / {task}: {cell.reason}" for (model, task), cell in failed]
    merges = [m for m in spec.models if m.merge]
    if merges:
        owners = [spec.own_adapter(c.task.name) for c in columns]
        header = [
            "merge",
            *(f"{c.name} / {o.name}" if o else c.name for c, o in zip(columns, owners, strict=True)),
        ]
        rows = [[m.name, *(_share_text(share(spec, cells, m.name, c)) for c in columns)] for m in merges]
        lines += ["", "## Merges as a share of each task's own adapter", ""]
        lines += [
            "Merged score / score of the adapter trained on that task (blank: no own adapter or a failed"
        ]
        lines += ["cell). For lower-is-better metrics (loss, ppl) a share above 1 is worse.", ""]
        lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def heatmap(spec: Spec, cells: Cells, path: Path) -> None:
    """Colour is scaled per column (tasks use different metrics); each cell shows its raw number."""
    from lit_lora.report.plots import plt, save_atomic

    columns = spec.columns
    grid: list[list[float | None]] = [
        [cells[(m.name, c.name)].value if (m.name, c.name) in cells else None for c in columns]
        for m in spec.models
    ]
    labels = [[_score(cells.get((m.name, c.name))) for c in columns] for m in spec.models]
    scaled = [[float("nan")] * len(columns) for _ in spec.models]
    for j in range(len(columns)):
        column = [row[j] for row in grid if row[j] is not None]
        low, high = (min(column), max(column)) if column else (0.0, 1.0)
        for i, row in enumerate(grid):
            if row[j] is not None:
                scaled[i][j] = (row[j] - low) / (high - low) if high > low else 0.5
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(columns), 1.0 + 0.5 * len(spec.models)))
    ax.imshow(scaled, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            text = labels[i][j] if value is None else f"{value:.3g}"
            if value is None:  # on the light grey background of a failed or missing cell
                color = "dimgray"
            else:
                color = "black" if scaled[i][j] > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(columns)), [f"{c.task.name}\n{c.metric}" for c in columns], fontsize=8)
    ax.set_yticks(range(len(spec.models)), [m.name for m in spec.models], fontsize=8)
    ax.set_facecolor("lightgrey")  # failed and not-run cells are NaN: drawn as the background
    ax.set_title("Models x tasks (colour scaled per column)", fontsize=9)
    save_atomic(fig, path)


def write_all(spec: Spec, cells: Cells, out: Path) -> list[str]:
    atomic_write_text(out / "matrix.csv", to_csv(spec, cells))
    atomic_write_text(out / "matrix.md", to_markdown(spec, cells))
    heatmap(spec, cells, out / "matrix.png")
    return ["matrix.csv", "matrix.md", "matrix.png"]
