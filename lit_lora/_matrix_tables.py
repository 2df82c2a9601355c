"""The matrix's outputs: ``matrix.csv``, ``matrix.md`` and ``matrix.png`` (rows: models, columns: tasks)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from lit_lora._io import atomic_write_text
from lit_lora._matrix_spec import Spec

FAILED = "failed"
NOT_RUN = "not run"  # left out by --tasks / --models and not finished earlier


@dataclass(frozen=True)
class Cell:
    status: str  # "completed", FAILED or NOT_RUN
    value: float | None = None
    reason: str = ""


Cells = dict[tuple[str, str], Cell]


def share(spec: Spec, cells: Cells, model: str, task: str) -> float | None:
    """A merge's score over the score of the adapter trained on ``task``; None where either is missing."""
    own = spec.own_adapter(task)
    merged, mine = cells.get((model, task)), cells.get((own.name, task)) if own else None
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
    """One row per model: kind, own task, a score per task, then ``share:<task>`` for merges."""
    tasks = [t.name for t in spec.tasks]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "kind", "own_task", *tasks, *(f"share:{t}" for t in tasks)])
    for m in spec.models:
        scores = [_score(cells.get((m.name, t))) for t in tasks]
        shares = [_share_text(share(spec, cells, m.name, t)) if m.merge else "" for t in tasks]
        writer.writerow([m.name, m.kind, m.own_task or "", *scores, *shares])
    return buffer.getvalue()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def to_markdown(spec: Spec, cells: Cells) -> str:
    header = ["model", "kind", *(f"{t.name} ({t.metric})" for t in spec.tasks)]
    rows = [[m.name, m.kind, *(_score(cells.get((m.name, t.name))) for t in spec.tasks)] for m in spec.models]
    lines = [f"# Model x task matrix (base: `{spec.base}`)", "", *_table(header, rows)]
    failed = [(k, c) for k, c in cells.items() if c.status == FAILED]
    if failed:
        lines += ["", "Failed cells:", ""]
        lines += [f"- {model} / {task}: {cell.reason}" for (model, task), cell in failed]
    merges = [m for m in spec.models if m.merge]
    if merges:
        owners = [spec.own_adapter(t.name) for t in spec.tasks]
        header = [
            "merge",
            *(f"{t.name} / {o.name}" if o else t.name for t, o in zip(spec.tasks, owners, strict=True)),
        ]
        rows = [
            [m.name, *(_share_text(share(spec, cells, m.name, t.name)) for t in spec.tasks)] for m in merges
        ]
        lines += ["", "## Merges as a share of each task's own adapter", ""]
        lines += [
            "Merged score / score of the adapter trained on that task (blank: no own adapter or a failed"
        ]
        lines += ["cell). For lower-is-better metrics (loss, ppl) a share above 1 is worse.", ""]
        lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def heatmap(spec: Spec, cells: Cells, path: Path) -> None:
    """Colour is scaled per column (tasks use different metrics); each cell shows its raw number."""
    from lit_lora.report_plots import plt, save_atomic

    grid: list[list[float | None]] = [
        [cells[(m.name, t.name)].value if (m.name, t.name) in cells else None for t in spec.tasks]
        for m in spec.models
    ]
    labels = [[_score(cells.get((m.name, t.name))) for t in spec.tasks] for m in spec.models]
    scaled = [[float("nan")] * len(spec.tasks) for _ in spec.models]
    for j in range(len(spec.tasks)):
        column = [row[j] for row in grid if row[j] is not None]
        low, high = (min(column), max(column)) if column else (0.0, 1.0)
        for i, row in enumerate(grid):
            if row[j] is not None:
                scaled[i][j] = (row[j] - low) / (high - low) if high > low else 0.5
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(spec.tasks), 1.0 + 0.5 * len(spec.models)))
    ax.imshow(scaled, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            text = labels[i][j] if value is None else f"{value:.3g}"
            if value is None:  # on the light grey background of a failed or missing cell
                color = "dimgray"
            else:
                color = "black" if scaled[i][j] > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(spec.tasks)), [f"{t.name}\n{t.metric}" for t in spec.tasks], fontsize=8)
    ax.set_yticks(range(len(spec.models)), [m.name for m in spec.models], fontsize=8)
    ax.set_facecolor("lightgrey")  # failed and not-run cells are NaN: drawn as the background
    ax.set_title("Models x tasks (colour scaled per column)", fontsize=9)
    save_atomic(fig, path)


def write_all(spec: Spec, cells: Cells, out: Path) -> list[str]:
    atomic_write_text(out / "matrix.csv", to_csv(spec, cells))
    atomic_write_text(out / "matrix.md", to_markdown(spec, cells))
    heatmap(spec, cells, out / "matrix.png")
    return ["matrix.csv", "matrix.md", "matrix.png"]
