"""The report's PNG plots: accuracy against trainable parameters, and memory and time per config."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Row = dict[str, Any]


def save_atomic(fig: Figure, path: Path) -> None:
    """Write the PNG beside its destination, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        plt.close(fig)


def palette(n: int) -> Any:
    """``n`` distinct colours by index: tab10, or tab20 where ten would repeat one for two configs."""
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return lambda i: colors(i % colors.N)


def accuracy_vs_params(summary: list[Row], rows: list[Row], split: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = palette(len(summary))
    markers = "osD^vP*Xh<>"
    same_x: dict[Any, list[str]] = {}
    for s in summary:
        same_x.setdefault(s["trainable"], []).append(s["config"])
    for i, s in enumerate(summary):
        if s["trainable"] is None or s["accuracy_mean"] is None:
            continue
        color, marker = colors(i), markers[i % len(markers)]
        peers = same_x[s["trainable"]]  # configs with equal counts are spread apart by a few percent
        x = s["trainable"] * 1.04 ** (peers.index(s["config"]) - (len(peers) - 1) / 2)
        runs = [r.get(f"{split}/acc") for r in rows if r["config"] == s["config"]]
        ys = [100 * v for v in runs if v is not None]
        ax.scatter([x] * len(ys), ys, color=color, alpha=0.3, s=18, marker=marker)
        ax.errorbar(
            x,
            100 * s["accuracy_mean"],
            yerr=None if s["accuracy_std"] is None else 100 * s["accuracy_std"],
            fmt=marker,
            color=color,
            markersize=8,
            capsize=4,
            label=f"{s['config']} (n={s['n']})",
        )
    ax.set_xscale("log")
    xs = [s["trainable"] for s in summary if s["trainable"]]
    if xs:  # at least a factor of 2 either side, so that the log axis keeps a few readable ticks
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"{'test' if split == 'test' else 'validation'} accuracy (%)")
    ax.set_title("Accuracy against trainable parameters (mean ± std over seeds; faint: each run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    save_atomic(fig, path)


def bars(summary: list[Row], key: str, xlabel: str, title: str, path: Path, marks: str | None = None) -> None:
    """Horizontal bars of ``key``; ``marks`` names the summary field whose marks follow each value."""
    labels = [s["config"] for s in summary]
    means = [s[f"{key}_mean"] or 0.0 for s in summary]
    stds = [s[f"{key}_std"] or 0.0 for s in summary]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * len(labels)))
    ypos = range(len(labels))
    families = list(dict.fromkeys(s["approach"].split(",")[0] for s in summary))
    family_color = palette(len(families))
    colors = [family_color(families.index(s["approach"].split(",")[0])) for s in summary]
    ax.barh(ypos, means, xerr=stds, capsize=4, color=colors, alpha=0.85)
    handles = [plt.Rectangle((0, 0), 1, 1, color=family_color(i)) for i in range(len(families))]
    ax.legend(handles, families, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.set_yticks(list(ypos), [f"{label} (n={s['n']})" for label, s in zip(labels, summary, strict=True)])
    ax.invert_yaxis()
    top = max((m + e for m, e in zip(means, stds, strict=True)), default=1.0) or 1.0
    for y, (m, e, s) in enumerate(zip(means, stds, summary, strict=True)):
        digits = 0 if m >= 100 else 1
        text = f"{m:.{digits}f}" + (f" ± {e:.{digits}f}" if s["n"] > 1 else "")
        text += f" {s[marks]}" if marks and s.get(marks) else ""
        ax.text(m + e + 0.01 * top, y, text, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    save_atomic(fig, path)


def plot_all(summary: list[Row], rows: list[Row], split: str, out: Path) -> list[str]:
    """Write the three plots into ``out``; returns their file names."""
    kinds = "/".join(sorted({s["memory_kind"] for s in summary}))
    accuracy_vs_params(summary, rows, split, out / "accuracy_vs_params.png")
    bars(summary, "memory_mb", f"peak memory (MB, {kinds})", "Peak memory per config (mean ± std)",
         out / "memory.png")  # fmt: skip
    bars(summary, "time_s", "training time (s, validation excluded; * contended runs left out,"
         " ? load not recorded, ! runs 1.5x apart)", "Training time per config (mean ± std)",
         out / "time.png", marks="time_marks")  # fmt: skip
    return ["accuracy_vs_params.png", "memory.png", "time.png"]


def curves(points: list[Row], metrics: list[str], path: Path) -> None:
    """One panel per metric: a faint line per run, the config's mean line and its ± std band over seeds."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    configs = list(dict.fromkeys(p["config"] for p in points))
    colors = palette(len(configs))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, config in enumerate(configs):
            mine = [p for p in points if p["config"] == config and p["metric"] == metric]
            _draw_config(ax, mine, colors(i), config)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} (faint: each run; line and band: mean ± std over seeds)", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    save_atomic(fig, path)


def _draw_config(ax: Any, points: list[Row], color: Any, config: str) -> None:
    for run_dir in dict.fromkeys(p["run_dir"] for p in points if p["series"] == "run"):
        run = [p for p in points if p["series"] == "run" and p["run_dir"] == run_dir]
        ax.plot([p["step"] for p in run], [p["value"] for p in run], color=color, alpha=0.3, lw=0.8,
                marker="o" if len(run) < 3 else None, ms=3)  # fmt: skip
    mean = [p for p in points if p["series"] == "mean"]
    if not mean:
        return
    steps = [p["step"] for p in mean]
    ax.plot(steps, [p["value"] for p in mean], color=color, lw=1.8, marker="o" if len(mean) < 3 else None,
            label=f"{config} (n={mean[0]['n']})")  # fmt: skip
    banded = [p for p in mean if p.get("low") is not None]
    if len(banded) == 1:  # one shared step (an epoch-end validation): a bar, as a band needs two
        ax.errorbar(steps, [p["value"] for p in mean], yerr=banded[0]["std"], color=color, capsize=4)
    elif banded:
        ax.fill_between([p["step"] for p in banded], [p["low"] for p in banded], [p["high"] for p in banded],
                        color=color, alpha=0.2, lw=0)  # fmt: skip
