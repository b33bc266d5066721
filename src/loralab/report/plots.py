"""PNG figures for the report (matplotlib, Agg backend so no display is needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report runs on training servers without a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from loralab.report.compare import METRIC_NAMES, Difference
from loralab.report.load import Run, epoch_curves, most_confused_matrix

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # fixed metadata keeps the PNG bytes identical across runs for the same inputs
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def training_curves(run: Run, path: Path) -> Path | None:
    """Train/validation loss (left) and validation F1s (right) by epoch; None when no log exists."""
    s = epoch_curves(run)
    if not s:
        return None
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, style in (("loss", "train loss", "-"), ("eval_loss", "validation loss", "o-")):
        if key in s:
            x, y = zip(*s[key], strict=True)
            ax_loss.plot(x, y, style, label=label, markersize=4)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    ax_loss.grid(alpha=0.3)
    for key in ("eval_weighted_f1", "eval_macro_f1", "eval_tail_f1", "eval_accuracy"):
        if key in s:
            x, y = zip(*s[key], strict=True)
            ax_f1.plot(x, y, "o-", label=key.removeprefix("eval_").replace("_", " "), markersize=4)
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("validation score")
    ax_f1.set_title("Validation F1 / accuracy")
    ax_f1.grid(alpha=0.3)
    for ax in (ax_loss, ax_f1):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def f1_vs_frequency(run: Run, path: Path, threshold: float) -> Path | None:
    """Per-class test F1 against training count (log x), bucket boundaries as vertical lines."""
    pc = {k: v for k, v in run.per_class.items() if v.get("support", 0) > 0}
    if not pc:
        return None
    counts = np.array([max(int(v.get("train_count", 0)), 1) for v in pc.values()], dtype=float)
    f1 = np.array([float(v.get("f1", 0.0)) for v in pc.values()])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(counts, f1, s=14, alpha=0.7, c=np.where(f1 < threshold, "tab:red", "tab:blue"))
    ax.set_xscale("log")
    ax.set_xlabel("training examples of the class (log scale)")
    ax.set_ylabel("test F1")
    ax.set_ylim(-0.03, 1.03)
    ax.axhline(threshold, color="tab:red", ls=":", lw=1, label=f"threshold {threshold:g}")
    ranked = sorted((int(v.get("train_count", 0)) for v in run.per_class.values()), reverse=True)
    for b in run.buckets[:-1]:
        hi = int(b.get("ranks", [0, 0])[1])
        if 0 < hi < len(ranked):
            # the boundary sits between the last class of this bucket and the first of the next
            x = float(np.sqrt(max(ranked[hi - 1], 1) * max(ranked[hi], 1)))
            ax.axvline(x, color="gray", ls="--", lw=1)
            ax.text(x, 0.0, f" rank {hi}|{hi + 1}", fontsize=7, color="gray", va="bottom")
    ax.set_title(f"Per-class F1 vs training frequency ({len(pc)} classes)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_heatmap(run: Run, path: Path, k: int = 15) -> Path | None:
    """Counts among the k most confused classes; None when the run made no mistakes."""
    classes, m = most_confused_matrix(run, k)
    if len(classes) < 2:
        return None
    size = max(5.0, 0.45 * len(classes) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues")
    short = [c if len(c) <= 28 else c[:26] + "…" for c in classes]
    ax.set_xticks(range(len(classes)), short, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if m[i, j]:
                color = "white" if m[i, j] > m.max() / 2 else "black"
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(f"Confusion among the {len(classes)} most confused classes")
    return _save(fig, path)


def metric_deltas(diffs: list[Difference], path: Path) -> Path | None:
    """Each later run minus the first, per metric, in points with 95% paired-bootstrap intervals."""
    if not diffs:
        return None
    metrics = list(dict.fromkeys(d.metric for d in diffs))
    runs = list(dict.fromkeys(d.run_b for d in diffs))
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(metrics) * len(runs) + 1.5))
    y = 0
    ticks, labels = [], []
    for m in metrics:
        for r in runs:
            d = next((d for d in diffs if d.metric == m and d.run_b == r), None)
            if d is None:
                continue
            err = [[(d.diff - d.low) * 100], [(d.high - d.diff) * 100]]
            color = "tab:green" if d.significant and d.diff > 0 else "tab:red" if d.significant else "gray"
            ax.errorbar(d.diff * 100, y, xerr=err, fmt="o", color=color, capsize=4)
            ticks.append(y)
            labels.append(f"{METRIC_NAMES.get(m, m)}: {r}")
            y += 1
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference vs {diffs[0].run_a} (points, 95% paired-bootstrap CI)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("Metric differences vs the first run")
    return _save(fig, path)


def bucket_bars(runs: list[Run], path: Path) -> Path | None:
    """Mean F1 per frequency bucket, one bar per run, side by side."""
    names = list(dict.fromkeys(b.get("name", "") for r in runs for b in r.buckets))
    if not names:
        return None
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(names) + 2), 4))
    x = np.arange(len(names))
    for i, run in enumerate(runs):
        by = {b.get("name", ""): float(b.get("mean_f1", np.nan)) for b in run.buckets}
        vals = [by.get(n, np.nan) for n in names]
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, label=run.name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_ylabel("mean F1 of the bucket's classes")
    ax.set_ylim(0, 1.08)
    ax.set_title("F1 by training-frequency bucket")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def pareto_scatter(
    points: list[tuple[str, float, float]],
    front: set[str],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path | None:
    """(label, cost, score) points with the Pareto front (no other point is both cheaper and better)
    drawn as a red step line; None when there is nothing to plot."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, x, y in points:
        on = label in front
        ax.scatter([x], [y], s=40 if on else 24, color="tab:red" if on else "tab:gray", zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    edge = sorted((x, y) for label, x, y in points if label in front)
    if edge:
        ax.step([x for x, _ in edge], [y for _, y in edge], "o-", where="post", color="tab:red", lw=1,
                markersize=6, label="Pareto front", zorder=2)  # fmt: skip
        ax.legend(fontsize=8, loc="lower right")
    xs = [x for _, x, _ in points]
    if min(xs) > 0 and max(xs) / min(xs) > 100:
        ax.set_xscale("log")  # parameters span orders of magnitude across ranks and target sets
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
